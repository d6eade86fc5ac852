"""The same no-op fan-out and chain DAGs in Prefect 3, Dagster, Dask and Luigi, for comparison.

The peers live in their own venv (``ensure_venv``); ``measure`` runs one of them there
in fresh subprocesses and returns flowlib-comparable numbers; ``compare`` prints the
table beside flowlib's. See README.md.
"""

from .compare import compare as compare
from .runner import DEFAULT_VENV as DEFAULT_VENV
from .runner import PEERS as PEERS
from .runner import SHAPES as SHAPES
from .runner import PeerError as PeerError
from .runner import available as available
from .runner import ensure_venv as ensure_venv
from .runner import max_n as max_n
from .runner import measure as measure

__all__ = [
    "DEFAULT_VENV",
    "PEERS",
    "SHAPES",
    "PeerError",
    "available",
    "compare",
    "ensure_venv",
    "max_n",
    "measure",
]
