"""Scheduling + persistence overhead of `flow run` on no-op DAGs (issue 3's table; see benchmarks/run.py).

.venv/bin/python benchmarks/overhead.py [--sizes 100,1000,10000] [--executors inline,local] [--repeat 3]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run import main

if __name__ == "__main__":
    sys.argv += ["--shapes", "fan-out,chain", "--skip-artifacts"]
    main()
