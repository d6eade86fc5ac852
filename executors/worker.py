"""The worker side: run one TaskSpec — load the operator and inputs, call it, store outputs.

`execute` is shared by every executor; `serve` is the loop of a warm worker process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
import sys
import threading
import time
import traceback
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from importlib import import_module
from typing import Any

from executors.base import TaskResult, TaskSpec
from executors.capture import Captured
from flowlib.artifacts import Reader, write_output

HOST = socket.gethostname()

_stores: dict[tuple[str, bool], Any] = {}


def store_for(spec: TaskSpec) -> Any:
    from flowlib.store import ArtifactStore

    key = (spec.store_url, spec.fsync)
    if key not in _stores:
        _stores[key] = ArtifactStore(spec.store_url, fsync=spec.fsync)
    return _stores[key]


_operators: dict[Any, Any] = {}
RELEASE = b"release"  # what lets a held task start (see LocalExecutor.submit_held)


def dumps(obj: Any) -> bytes:
    """Pickle for the pipe to a worker: the C pickler, cloudpickle only for what it cannot do."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError):
        import cloudpickle

        return cloudpickle.dumps(obj)


def resolve_operator(spec: TaskSpec) -> Any:
    """Return the Operator a spec names: imported by file path, or unpickled (once per worker)."""
    ref = spec.operator
    found = _operators.get(ref)
    if found is None:
        found = _operators[ref] = _resolve(ref)
    return found


def forget_operators() -> None:
    """Drop the operators this process resolved, so the next task imports the pipeline afresh."""
    _operators.clear()


def _resolve(ref: Any) -> Any:
    if ref.pickled is not None:
        import cloudpickle

        return cloudpickle.loads(ref.pickled)
    from flowlib.loading import load_module

    obj: Any = load_module(ref.file, ref.module)
    for part in ref.qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _namedtuple_class(cls_ref: list[str], names: list[str]) -> Any:
    module, qualname = cls_ref
    try:
        obj: Any = sys.modules.get(module) or import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except Exception:
        return namedtuple(qualname.rsplit(".", 1)[-1], names)


def load_input(store: Any, value: Mapping[str, Any]) -> Any:
    """Turn one TaskSpec input into its value."""
    if "literal" in value:
        return value["literal"]
    reader = Reader(store, value.get("inline"))
    if "digest" in value:
        return reader.get(value["digest"])
    fields = value["fields"]
    cls = _namedtuple_class(value["cls"], list(fields))
    return cls(*(reader.get(digest) for digest in fields.values()))


def checkpoint_name(root_run_id: str, node: str) -> str:
    """The store ref under which a node's checkpoints are kept for a whole resume chain."""
    return f"checkpoints/{root_run_id}/{hashlib.sha256(node.encode()).hexdigest()[:32]}"


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (the capture may have replaced it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _node_logger() -> logging.Logger:
    """The one logger behind `current.logger`; its lines land in the node's captured log.

    One logger per process, not per node: creating loggers by name costs a cache
    flush of every logger, which made a 10,000-node run quadratic.
    """
    logger = logging.getLogger("flowlib.node")
    if not logger.handlers:
        logger.propagate = False
        logger.setLevel(logging.DEBUG)
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
    return logger


def fit_threads(cpus: float) -> None:
    """Give torch as many threads as the attempt has CPUs, not one per core of the machine:
    two workers each running a core's worth of threads per core slowed training several times.
    OMP_NUM_THREADS, when the user set it, wins."""
    torch = sys.modules.get("torch")
    if torch is None or "OMP_NUM_THREADS" in os.environ:
        return
    wanted = max(1, int(cpus))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's code down, without our frames above it."""
    frames = traceback.extract_tb(exc.__traceback__)
    here = os.path.dirname(os.path.abspath(__file__))
    flowlib_dir = os.path.dirname(os.path.abspath(import_module("flowlib").__file__ or ""))
    user = [f for f in frames if not f.filename.startswith((here, flowlib_dir))]
    lines = ["Traceback (most recent call last):\n", *traceback.format_list(user or frames)]
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def execute(
    spec: TaskSpec,
    emit: Callable[[str, dict[str, Any]], None],
    capture: str = "fd",
    rank: int = 0,
    world_size: int = 1,
    in_group: bool = False,
    released: Callable[[], None] | None = None,
) -> TaskResult:
    """Run one attempt and return its TaskResult; user errors are results, not exceptions.

    A held task gets `released`, which returns once the task may start: the attempt loads its
    operator and inputs first, then waits for it."""
    from flowlib import context, typecheck
    from flowlib.errors import OperatorReturnTypeError

    if spec.distributed is not None and not in_group:
        if released is not None:
            released()
        from executors.distributed import run_group

        result = run_group(spec, emit)
        result.host, result.pid = HOST, os.getpid()
        return result
    started = time.time()
    result = TaskResult(spec.task_id, False, host=HOST, pid=os.getpid(), started_at=started)
    store = store_for(spec)
    saved_env = {key: os.environ.get(key) for key in spec.env}
    os.environ.update(spec.env)

    def save_checkpoint(obj: Any, step: int | None) -> None:
        ref = store.put(obj)
        if spec.checkpoint_ref:
            store.set_ref(spec.checkpoint_ref, ref.digest)
        emit("checkpoint", {"digest": ref.digest, "step": step, "size": ref.size})

    def load_checkpoint() -> Any:
        digest = store.get_ref(spec.checkpoint_ref) if spec.checkpoint_ref else None
        return store.get(digest) if digest else None

    gpus = [int(x) for x in spec.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip().isdigit()]
    with Captured(capture) as log:
        task_context = context.TaskContext(
            run_id=spec.run_id,
            node=spec.node,
            attempt=spec.attempt,
            gpus=gpus,
            rank=rank,
            world_size=world_size,
            emit=emit,
            checkpoint=context.Checkpoints(save_checkpoint, load_checkpoint),
            logger=_node_logger(),
        )
        token = context.bind(task_context)
        try:
            op = resolve_operator(spec)
            kwargs = {param: load_input(store, value) for param, value in spec.inputs.items()}
            if capture == "fd":  # a worker process, not the scheduler's own (inline)
                fit_threads(spec.resources.cpus)
            if released is not None:
                released()
                result.started_at = time.time()
            value = op.fn(**kwargs)
            if not typecheck.is_instance(value, op.return_type):
                raise OperatorReturnTypeError(
                    f"operator '{op.qualname}' returned {typecheck.describe_value(value)}, "
                    f"expected {typecheck.describe(op.return_type)}"
                )
            if rank == 0:
                fields = op.output_fields
                limit = spec.inline_limit
                if fields:
                    result.outputs = {
                        name: write_output(store, getattr(value, name), limit) for name in fields
                    }
                else:
                    result.outputs = {"return": write_output(store, value, limit)}
            result.ok = True
        except BaseException as exc:  # the user's code may raise anything, SystemExit included
            if isinstance(exc, KeyboardInterrupt):
                raise
            result.error = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": _user_traceback(exc),
            }
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        finally:
            context.unbind(token)
            for key, old in saved_env.items():
                if old is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = old
    result.log = log.text
    result.ended_at = time.time()
    return result


def die_with_parent(*, group: bool = False) -> None:
    """Make this process stop when the process that started it dies (no orphans).

    With `group`, this process leads its own process group (the executor starts it
    in a new session) and takes the whole group down: whatever an operator started too.
    """
    import signal

    parent = os.getppid()

    def end() -> None:
        if group:
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        if group:
            signal.signal(signal.SIGTERM, lambda *_: end())
        libc.prctl(1, signal.SIGTERM if group else signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass

    def watch() -> None:  # also covers a main thread stuck where signal handlers cannot run
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                end()

    threading.Thread(target=watch, daemon=True, name="flowlib-parent-watch").start()


class _Release:
    """Waits, once, for the release of a held task (RELEASE: nothing else comes while one is held)."""

    def __init__(self, conn: Any, held: bool) -> None:
        self.conn, self.pending = conn, held

    def __call__(self) -> None:
        if self.pending:
            self.pending = False
            try:
                message = self.conn.receive()
            except (EOFError, OSError):
                os._exit(0)  # the pool shut down (or its scheduler died) before the task started
            if message != RELEASE:
                raise RuntimeError(f"a held task got {message[:40]!r} instead of its release")


def serve(conn: Any, sys_path: list[str], preload: Sequence[Sequence[str]] = ()) -> None:
    """Loop of a warm worker process: receive pickled specs, send events and results back.

    `preload` names (module, file) of pipelines to import before the first task arrives.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the scheduler's to handle
    die_with_parent(group=True)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _preload(preload)
    while True:
        try:
            message = conn.receive()
        except (EOFError, OSError):
            return
        task = pickle.loads(message)
        held = isinstance(task, tuple)  # ("held", spec): it starts once released
        spec: TaskSpec = task[1] if held else task

        def emit(kind: str, data: dict[str, Any], _spec: TaskSpec = spec) -> None:
            conn.send(dumps(("event", _spec.task_id, kind, data)))

        release = _Release(conn, held)
        result = execute(spec, emit, released=release if held else None)
        release()  # one that failed before its start (a missing input) still waits: the release comes
        try:
            payload = dumps(("result", result))
        except Exception as exc:
            result = TaskResult.failure(spec.task_id, "ResultNotPicklable", str(exc))
            payload = dumps(("result", result))
        conn.send(payload)


def _preload(pipelines: Sequence[Sequence[str]]) -> None:
    """Import the run's pipelines ahead of its tasks. What they print was shown by the scheduler's
    own import already; an import that fails here fails again, reported, in the task that needs it."""
    from flowlib.loading import load_module

    for name, file in pipelines:
        try:
            with Captured("fd"):
                load_module(file, name)
        except Exception:
            pass


def main() -> None:
    """`python -m executors.worker FD`: serve tasks over the inherited socket FD."""
    import json

    from executors.channel import Channel

    sys_path = json.loads(os.environ.pop("FLOWLIB_WORKER_SYS_PATH", "[]"))
    preload = json.loads(os.environ.pop("FLOWLIB_WORKER_PRELOAD", "[]"))  # [[module, file], ...]
    serve(Channel(socket.socket(fileno=int(sys.argv[1]))), sys_path, preload)


if __name__ == "__main__":
    main()
