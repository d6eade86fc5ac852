"""Start the executors a DAG needs, before the database layer is even imported.

Workers then start up while the scheduler imports SQLAlchemy and opens the
database, instead of after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from executors.base import Executor
from executors.registry import executor_class
from flowlib.config import Config
from flowlib.dag import DAG
from flowlib.errors import ConfigError


@dataclass
class RunOptions:
    executor: str | None = None
    use_cache: bool = True
    fail_fast: bool = False
    max_parallel: int | None = None
    progress: Callable[[str, str, dict[str, int]], None] | None = None
    # the run's small artifacts as the scheduler saw them (scheduler.store.blobs.Blobs), for reading
    # its outputs afterwards without loading them from the database again
    blobs: Any = None


def executor_names(dag: DAG, default: str) -> set[str]:
    return {node.operator.executor or default for node in dag.nodes.values()} or {default}


def start_executors(names: set[str], config: Config) -> dict[str, Executor]:
    started: dict[str, Executor] = {}
    try:
        for name in sorted(names):
            try:
                cls = executor_class(name)
            except ConfigError as exc:
                origin = config.origin("executor") if name == config.executor else "an operator's executor="
                raise ConfigError(f"{exc} (from {origin})") from None
            executor = cls()
            executor.start(config.executor_settings(name))
            started[name] = executor
    except BaseException:
        for executor in started.values():
            executor.shutdown()
        raise
    return started
