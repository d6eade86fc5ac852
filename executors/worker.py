"""The worker side: run one TaskSpec — load the operator and inputs, call it, store outputs.

`execute` is shared by every executor; `serve` is the loop of a warm worker process.
"""

from __future__ import annotations

import gc
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

from executors import stopping
from executors.base import TaskResult, TaskSpec
from executors.capture import Captured
from flowlib.artifacts import Reader, write_output
from flowlib.plan import RETURN

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


def _namedtuple_class(cls_ref: list[str] | None, names: list[str]) -> Any:
    if cls_ref is None:
        return None  # a plain tuple output
    from flowlib.loading import find_object

    module, qualname = cls_ref
    return find_object(module, qualname) or namedtuple(qualname.rsplit(".", 1)[-1], names)


def load_input(store: Any, value: Mapping[str, Any], project_root: str = "") -> Any:
    """Turn one TaskSpec input (see scheduler.engine.inputs) into its value."""
    return _load(Reader(store, value.get("inline")), value, project_root)


def _load(reader: Reader, value: Mapping[str, Any], root: str) -> Any:
    if "ref" in value:
        return reader.get(value["ref"])
    if "literal" in value:
        return value["literal"]
    if "pickled" in value:
        import base64

        return pickle.loads(base64.b64decode(value["pickled"]))
    if "file" in value:
        from flowlib.files import File

        return File(value["file"], base=root or ".")
    if "fields" in value:
        fields = value["fields"]
        values = [reader.get(ref) for ref in fields.values()]
        cls = _namedtuple_class(value.get("cls"), list(fields))
        return tuple(values) if cls is None else cls(*values)
    if "list" in value:
        return [_load(reader, item, root) for item in value["list"]]
    if "tuple" in value:
        return tuple(_load(reader, item, root) for item in value["tuple"])
    if "dict" in value:
        return {_load(reader, k, root): _load(reader, v, root) for k, v in value["dict"]}
    raise ValueError(f"unknown input {sorted(value)}")


def call_operator(op: Any, kwargs: dict[str, Any]) -> Any:
    """Call the operator's function; a `*args` parameter gets its tuple spread."""
    if not op.spreads:
        return op.fn(**kwargs)
    signature = op.signature
    args: list[Any] = []
    keywords: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name not in kwargs:
            continue
        if param.kind == param.VAR_POSITIONAL:
            args.extend(kwargs[name])
        elif param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and not keywords:
            args.append(kwargs[name])
        else:
            keywords[name] = kwargs[name]
    return op.fn(*args, **keywords)


def as_declared(op: Any, value: Any) -> Any:
    """The returned value in its declared shape: a plain tuple of the right length becomes the
    declared NamedTuple; numpy integer and floating scalars become Python numbers where an
    `int` / `float` is declared."""
    hint = op.return_type
    if type(value) is hint and not op.output_fields:  # the usual case: nothing to convert
        return value
    from flowlib import typecheck

    cls = op.output_class
    fields = op.output_fields
    if cls is not None and type(value) is tuple and len(value) == len(fields):
        value = cls(*value)
    if fields and isinstance(value, tuple) and len(value) == len(fields):
        converted = [_python_number(v, h) for v, h in zip(value, fields.values(), strict=True)]
        if any(a is not b for a, b in zip(converted, value, strict=True)):
            value = cls(*converted) if cls is not None else tuple(converted)
        return value
    return _python_number(value, hint) if typecheck.numpy_number(value, hint) else value


def _python_number(value: Any, hint: Any) -> Any:
    from flowlib import typecheck

    if not typecheck.numpy_number(value, hint):
        return value
    return int(value) if hint is int else float(value)


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


THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
USER_THREADS = "FLOWLIB_USER_THREADS"  # set in a worker's environment when the user chose thread counts
_NATIVE = ("numpy", "scipy", "sklearn", "torch", "xgboost", "lightgbm", "numexpr")
_fitted: list[tuple[int, int]] = []  # (threads, modules loaded) of the last fit, per worker process


def fit_threads(cpus: float) -> None:
    """Give native thread pools (OpenMP, BLAS, MKL, torch) as many threads as the attempt has CPUs,
    not one per core of the machine: two workers each running a core's worth of threads per core
    ran several times slower. Thread counts the user set in the environment win."""
    if os.environ.get(USER_THREADS):
        return
    wanted = max(1, int(cpus))
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    state = (wanted, len(sys.modules))
    if _fitted and _fitted[0] == state:
        return
    _fitted[:] = [state]
    if any(name in sys.modules for name in _NATIVE):
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return
        threadpool_limits(limits=wanted)


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
    stopping.begin_task()
    result = TaskResult(spec.task_id, False, host=HOST, pid=os.getpid(), started_at=started)
    store = store_for(spec)
    saved_env = {key: os.environ.get(key) for key in spec.env}
    os.environ.update(spec.env)

    def save_checkpoint(obj: Any, step: int | None) -> None:
        ref = store.put(obj)
        if spec.checkpoint_ref:
            store.set_ref(spec.checkpoint_ref, ref)
        emit("checkpoint", {**ref.to_json(), "step": step})

    def load_checkpoint() -> Any:
        ref = store.get_ref(spec.checkpoint_ref) if spec.checkpoint_ref else None
        return store.get(ref) if ref is not None else None

    gpus = [int(x) for x in spec.env.get("CUDA_VISIBLE_DEVICES", "").split(",") if x.strip().isdigit()]
    with Captured(capture, emit if capture == "fd" and rank == 0 else None) as log:
        task_context = context.TaskContext(
            run_id=spec.run_id,
            node=spec.node,
            attempt=spec.attempt,
            gpus=gpus,
            rank=rank,
            world_size=world_size,
            emit=stopping.flowlib_code(emit),
            checkpoint=context.Checkpoints(
                stopping.flowlib_code(save_checkpoint), stopping.flowlib_code(load_checkpoint)
            ),
            logger=_node_logger(),
        )
        token = context.bind(task_context)
        try:
            op = resolve_operator(spec)
            kwargs = {
                param: load_input(store, value, spec.project_root) for param, value in spec.inputs.items()
            }
            if capture == "fd":  # a worker process, not the scheduler's own (inline)
                fit_threads(spec.resources.cpus)
                _log_records_to_stderr()
            if released is not None:
                released()
            result.started_at = time.time()
            log.begin(report=spec.timeout is not None)
            with stopping.user_code():
                value = call_operator(op, kwargs)
            value = as_declared(op, value)
            if not typecheck.is_instance(value, op.return_type):
                raise OperatorReturnTypeError(
                    f"operator '{op.qualname}' returned {typecheck.describe_value(value)}, "
                    f"expected {typecheck.describe(op.return_type)}"
                )
            if rank == 0:
                fields, limit, split = op.output_fields, spec.inline_limit, spec.split_outputs
                if fields:
                    result.outputs = {
                        name: write_output(store, item, limit, split=name in split)
                        for name, item in zip(fields, value, strict=True)
                    }
                else:
                    result.outputs = {"return": write_output(store, value, limit, split=RETURN in split)}
            result.ok = True
        except stopping.OperatorStopped as exc:  # a gentle cancel (see executors.stopping)
            stopping.end_descendants()
            result.error = {"type": "Cancelled", "message": str(exc), "traceback": None}
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


_LOGGING: list[bool] = []


def _log_records_to_stderr() -> None:
    """Lines an operator sends through the standard `logging` module (Kedro's style) go to the
    node's log: the root logger writes to the captured stderr, from INFO up, unless the
    pipeline configured logging itself."""
    if _LOGGING:
        return
    _LOGGING.append(True)
    root = logging.getLogger()
    if root.handlers:
        return
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)


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


def become_worker(sys_path: Sequence[str] = (), parent: int | None = None) -> None:
    """Make this process a pool worker: Ctrl-C is the scheduler's to handle, it dies with its
    parent (with `parent`, the pid that must be its parent: one already gone ends it now),
    and `sys_path` comes first on its import path."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stopping.install()
    die_with_parent(group=True)
    if parent is not None and os.getppid() != parent:
        os._exit(1)
    for entry in reversed(sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def serve(conn: Any, sys_path: list[str], preload: Sequence[Sequence[str]] = ()) -> None:
    """Loop of a warm worker process: receive pickled specs, send events and results back.

    `preload` names (module, file) of pipelines to import before the first task arrives.
    """
    become_worker(sys_path)
    preload_pipelines(preload)
    gc.freeze()  # as the template does: the collector's full passes skip what the imports made
    serve_tasks(conn)


def serve_tasks(conn: Any) -> None:
    """Run the tasks that arrive on `conn` until the pool closes its end."""
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


def preload_pipelines(pipelines: Sequence[Sequence[str]]) -> None:
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
