"""Print the peers' table: every peer, both shapes, at each size it is asked for (run by hand).

.venv/bin/python -m benchmarks.peers [--peers prefect,dagster,...] [--sizes 100,1000,10000]
                                     [--repeat 3] [--timeout 120]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .compare import compare
from .runner import DEFAULT_VENV, PEERS, SHAPES, max_n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--peers", default=",".join(PEERS), help=f"any of {', '.join(PEERS)}")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument(
        "--sizes",
        default="100,1000,10000",
        help="each peer skips sizes above its cap: " + ", ".join(f"{peer} {max_n(peer):,}" for peer in PEERS),
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one run may take (default 120)")
    parser.add_argument("--venv", default=str(DEFAULT_VENV))
    args = parser.parse_args()
    unknown = sorted(set(args.peers.split(",")) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer {', '.join(unknown)}; known: {', '.join(PEERS)}")
    print(f"peers: {os.cpu_count()} CPUs, Python {sys.version.split()[0]} (flowlib side)")
    compare(
        None,
        [int(n) for n in args.sizes.split(",")],
        args.repeat,
        peers=args.peers.split(","),
        shapes=args.shapes.split(","),
        venv=Path(args.venv),
        timeout_s=args.timeout,
    )


if __name__ == "__main__":
    main()
