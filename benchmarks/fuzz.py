"""Coverage-guided fuzzing of configuration and pipeline loading (run by hand, for a fixed budget).

    .venv/bin/python benchmarks/fuzz.py --target config --seconds 60
    .venv/bin/python benchmarks/fuzz.py --target loading --seconds 60
    .venv/bin/python benchmarks/fuzz.py --target all --seconds 60      # each target in turn

Targets:
  config   any bytes as flow.toml (pyproject.toml when they hold "[tool"), a last line
           `#FLOW_HOME=...` as that variable, through flowlib.config.load
  loading  a pipeline file assembled from the bytes (pieces of real pipelines, of broken ones,
           code that raises at import; punctuation, digits and stray bytes spliced in), through
           flowlib.loading.select_workflow (load_module, workflows_in)

The invariant: only a FlowError escapes (what a pipeline raises arrives as PipelineLoadError) and
its message can be printed; a configuration that loads holds usable values. Anything else is a
crash, saved once per kind (exception type and flowlib line) with its input and traceback under
benchmarks/.fuzz/TARGET/. With atheris installed (`pip install atheris`: a manylinux wheel, or
the `fuzz` extra) libFuzzer picks the inputs, guided by the coverage of flowlib and tomllib;
without it a plain loop feeds random and mutated seed bytes. Prints a table: target, engine,
executions, seconds, crashes found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / ".fuzz"
TARGETS = ("config", "loading")

CONFIG_SEEDS = [
    b'[flow]\nhome = ".flow"\ndb = "sqlite:///runs.db"\nartifacts = "s3://bucket/a"\nexecutor = "local"\nfsync = false\n',
    b'[flow]\ndb_outage_seconds = 90\n[executors.local]\nstart = "spawn"\n[server]\nmax_code_mb = 5e1\n',
    b'[executors.local]\nworkers = 4\n[executors.gpu]\ndevices = [0, 1]\n[server]\nlease_seconds = 2.5\ntoken = "t"\n',
    b'[executors.ssh]\nidentity_file = "~/.ssh/id"\n[[executors.ssh.host]]\naddress = "h1"\nlabels = ["a"]\ngpus = 2\n',
    b'[executors.ray]\naddress = "auto"\nresources = { tpu = 1 }\n[executors.plugin]\nanything = "goes"\n',
    b'[project]\nname = "x"\n[tool.flow]\nexecutor = "inline"\n[tool.flow.executors.local]\nworkers = 2\n',
    b'[flow]\nhome = "h"\n#FLOW_HOME=~/elsewhere',
]

PIECES = [
    "from flowlib import operator, workflow\n",
    "from typing import Any, NamedTuple, Optional\nfrom flowlib import File, Resources, operator, workflow\n",
    "@operator\ndef op{n}(x: int) -> int:\n    return x + {n}\n",
    "@operator(retries={n}, cache=False, resources=Resources(cpus={n}))\ndef op{n}(x: {hint}) -> {hint}:\n    return x\n",
    "@workflow\ndef wf{n}(n: int = {n}) -> int:\n    return op{n}(n)\n",
    "@workflow\ndef wf{n}(*args: int) -> None:\n    return None\n",
    "@workflow\ndef wf{n}(p: {hint} = {msg}) -> Any:\n    return op{n}(p)\n",
    "class Pair(NamedTuple):\n    a: int\n    b: int\n\n@operator\ndef pair{n}(x: int) -> Pair:\n    return Pair(x, x)\n",
    "operator({n})\n",
    "workflow({msg})\n",
    "wf_alias = wf{n}\n",
    "raise ValueError({msg})\n",
    "raise KeyError({msg})\n",
    "raise SystemExit({n})\n",
    "raise {builtin}\n",
    "class Odd(Exception):\n    def __str__(self):\n        raise RuntimeError({msg})\n\nraise Odd()\n",
    "class Odd2(Exception):\n    def __str__(self):\n        return {n}\n\nraise Odd2({msg})\n",
    "from flowlib.errors import WorkflowDefinitionError\nraise WorkflowDefinitionError({msg})\n",
    "from flowlib.errors import FlowError\nclass Mine(FlowError):\n    def __str__(self):\n        raise ValueError({msg})\n\nraise Mine()\n",
    "import no_such_module_{n}\n",
    "import flowlib.no_such_{n}\n",
    "from . import sibling_{n}\n",
    "def f{n}():\n    return f{n}()\n\nf{n}()\n",
    "x{n} = " + "(" * 60 + "1" + ")" * 60 + "\n",
    "import sys\ndel sys.modules[__name__]\n",
    "import sys\nsys.modules[__name__] = {n}\n",
    "__name__ = {msg}\n",
    "if True:\nreturn {n}\n",
    "def g{n}(:\n",
    "\tx = 1\n  y = 2\n",
    "s = '''{msg}\n",
]
HINTS = ["int", "list[int]", "Any", "'NotAType'", "Optional[int]", "Pair", "undefined_name", "File"]
BUILTINS = [
    "RecursionError",
    "MemoryError",
    "StopIteration",
    "GeneratorExit",
    "BaseException",
    "UnicodeError",
]
SPLICE = " \t\n\r\f()[]{}:;,.=+-*/#'\"\\@0123456789"
RAW = [b"\x00", b"\x80", b"\xff", b"\xc3", b"\xef\xbb\xbf", b"\r", b"\x0c"]


class Reader:
    """Choices drawn from the input bytes, so that the same bytes make the same case."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def more(self) -> bool:
        return self.at < len(self.data)

    def byte(self) -> int:
        self.at += 1
        return self.data[self.at - 1] if self.at <= len(self.data) else 0

    def pick(self, options: list) -> object:
        return options[self.byte() % len(options)]

    def chunk(self) -> bytes:
        size = self.byte() % 24
        self.at += size
        return self.data[self.at - size : self.at]


class Crash(Exception):
    """The invariant broke: not a FlowError, or a FlowError that cannot be printed."""


# -- targets -------------------------------------------------------------------------------------


def config_target(data: bytes, work: Path) -> None:
    from flowlib import config
    from flowlib.errors import ConfigError

    name = "pyproject.toml" if b"[tool" in data else "flow.toml"
    for old in ("pyproject.toml", "flow.toml"):
        (work / old).unlink(missing_ok=True)
    _, _, last = data.rpartition(b"\n")
    environ = {}
    if last.startswith(b"#FLOW_HOME="):
        environ["FLOW_HOME"] = last[len(b"#FLOW_HOME=") :].decode("utf-8", "replace").replace("\x00", "")
    (work / name).write_bytes(data)
    try:
        loaded = config.load(work, environ=environ)
    except ConfigError as exc:
        message = str(exc)
        if "\n" in message or (str(work / name) not in message and "FLOW_HOME" not in message):
            raise Crash(f"a ConfigError that is not one line naming the file: {message!r}") from None
        return
    for value in (str(loaded.home), loaded.db, loaded.artifacts):
        if "\x00" in value:
            raise Crash(f"a loaded configuration holds a NUL: {value!r}")
    for executor in loaded.executors:
        if not isinstance(loaded.executor_settings(executor), dict):
            raise Crash(f"settings of {executor!r} are not a table")
    if not isinstance(loaded.fsync, bool) or not isinstance(loaded.server, dict):
        raise Crash(f"wrong types loaded: {loaded!r}")


def pipeline_source(data: bytes) -> bytes:
    """A pipeline file from the input: pieces filled in from the bytes, then bytes spliced in."""
    reader = Reader(data)
    parts = []
    while reader.more() and len(parts) < 12:
        piece = str(reader.pick(PIECES))
        text = reader.chunk().decode("utf-8", "replace")
        parts.append(
            piece.replace("{n}", str(reader.byte() % 4))
            .replace("{hint}", str(reader.pick(HINTS)))
            .replace("{builtin}", str(reader.pick(BUILTINS)))
            .replace("{msg}", repr(text))
        )
    source = "\n".join(parts).encode()
    for _ in range(reader.byte() % 4):  # punctuation and digits only: never a new name to call
        at = reader.byte() * 256 + reader.byte()
        spliced = "".join(SPLICE[b % len(SPLICE)] for b in reader.chunk()).encode()
        if reader.byte() % 3 == 0:
            spliced = bytes(reader.pick(RAW))  # type: ignore[arg-type]
        at %= len(source) + 1
        source = source[:at] + spliced + source[at:]
    return source


def loading_target(data: bytes, work: Path, count: list[int] = [0]) -> None:  # noqa: B006
    from flowlib import loading
    from flowlib.errors import FlowError

    count[0] += 1
    path = work / f"fz{count[0]}.py"
    path.write_bytes(pipeline_source(data))
    name = [None, "wf0", "wf1", "nope"][data[-1] % 4 if data else 0]
    try:
        loading.select_workflow(path, name)
    except FlowError as exc:
        try:
            str(exc)
        except Exception as inner:
            raise Crash(f"a {type(exc).__name__} that cannot be printed: {inner!r}") from None
    finally:
        path.unlink()
        for module_name, module in list(sys.modules.items()):
            if str(getattr(module, "__file__", None) or "").startswith(str(work)) or module_name.startswith(
                "fz"
            ):
                del sys.modules[module_name]
        loading.LOADED.clear()


# -- engines -------------------------------------------------------------------------------------


class Run:
    """Counts executions and records each new kind of crash once."""

    def __init__(self, target: str, seconds: float, runs: int | None = None) -> None:
        self.target, self.seconds, self.runs = target, seconds, runs
        self.function: Callable[[bytes, Path], None] = {"config": config_target, "loading": loading_target}[
            target
        ]
        self.work = Path(tempfile.mkdtemp(prefix=f"flowfuzz-{target}-"))
        self.start, self.executions = time.monotonic(), 0
        self.kinds: dict[str, str] = {}

    def one(self, data: bytes) -> None:
        self.executions += 1
        try:
            self.function(data, self.work)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            self.crashed(data, exc)

    def crashed(self, data: bytes, exc: BaseException) -> None:
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "/flowlib/" in f.filename] or frames[-1:]
        where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
        kind = f"{type(exc).__name__} at {where}"
        if kind in self.kinds:
            return
        folder = OUT / self.target
        folder.mkdir(parents=True, exist_ok=True)
        stem = hashlib.sha256(data).hexdigest()[:12]
        (folder / f"crash-{stem}").write_bytes(data)
        shown = "".join(traceback.format_exception(exc))
        (folder / f"crash-{stem}.txt").write_text(f"{kind}\n\n{shown}")
        self.kinds[kind] = str(folder / f"crash-{stem}")
        print(f"crash: {kind} -> {self.kinds[kind]}", file=sys.stderr, flush=True)

    def over(self) -> bool:
        if self.runs is not None:
            return self.executions >= self.runs
        return time.monotonic() - self.start >= self.seconds

    def report(self, engine: str) -> dict:
        return {
            "target": self.target,
            "engine": engine,
            "executions": self.executions,
            "seconds": round(time.monotonic() - self.start, 1),
            "crashes": len(self.kinds),
            "kinds": self.kinds,
        }


def seeds(target: str) -> list[bytes]:
    if target == "config":
        return list(CONFIG_SEEDS)
    rnd = random.Random(0)
    return [bytes(rnd.randrange(256) for _ in range(rnd.randrange(8, 120))) for _ in range(16)]


def mutate(data: bytes, rnd: random.Random, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rnd.randrange(1, 6)):
        choice = rnd.randrange(5)
        at = rnd.randrange(len(buf) + 1)
        if choice == 0 and buf:
            buf[min(at, len(buf) - 1)] ^= 1 << rnd.randrange(8)
        elif choice == 1:
            buf[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 8)))
        elif choice == 2:
            del buf[at : at + rnd.randrange(1, 16)]
        elif choice == 3:
            other = rnd.choice(pool)
            start = rnd.randrange(len(other) + 1)
            buf[at:at] = other[start : start + rnd.randrange(1, 32)]
        else:
            buf[at:at] = rnd.choice([b"[", b"]", b"=", b'"', b"\n", b".", b"{", b"}", b"~", b"\\u0000"])
    return bytes(buf[:4096])


def plain_loop(run: Run, seed: int) -> None:
    rnd = random.Random(seed)
    pool = seeds(run.target)
    for data in pool:
        run.one(data)
    while not run.over():
        data = mutate(rnd.choice(pool), rnd, pool) if rnd.random() < 0.9 else rnd.randbytes(rnd.randrange(64))
        run.one(data)
        if len(pool) < 512 and rnd.random() < 0.01:
            pool.append(data)


def atheris_loop(run: Run, stats: Path) -> None:
    import atheris

    with atheris.instrument_imports():
        import tomllib  # noqa: F401

        import flowlib.config
        import flowlib.dag
        import flowlib.loading
        import flowlib.operators
        import flowlib.workflows  # noqa: F401

    corpus = run.work / "corpus"
    corpus.mkdir()
    for i, data in enumerate(seeds(run.target)):
        (corpus / f"seed{i}").write_bytes(data)

    def test_one_input(data: bytes) -> None:
        run.one(data)
        if run.over():  # libFuzzer's own exit would skip this process's reporting
            stats.write_text(json.dumps(run.report("atheris")))
            os._exit(0)

    args = [
        sys.argv[0],
        f"-max_total_time={int(run.seconds) + 30}",
        "-timeout=20",
        "-max_len=4096",
        str(corpus),
    ]
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


def worker(target: str, seconds: float, stats: Path, plain: bool, seed: int, runs: int | None) -> None:
    run = Run(target, seconds, runs)
    try:
        import atheris  # noqa: F401
    except ImportError:
        plain = True
    if not plain:
        atheris_loop(run, stats)  # exits the process
    plain_loop(run, seed)
    stats.write_text(json.dumps(run.report("plain")))
    shutil.rmtree(run.work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", choices=[*TARGETS, "all"], default="all")
    parser.add_argument("--seconds", type=float, default=60.0, help="budget per target")
    parser.add_argument("--plain", action="store_true", help="the plain loop even when atheris is installed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the plain loop")
    parser.add_argument("--runs", type=int, help="stop after this many executions instead (plain loop)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a stats file: run one target here
    args = parser.parse_args()
    if args.worker:
        plain = args.plain or args.runs is not None
        worker(args.target, args.seconds, Path(args.worker), plain, args.seed, args.runs)
        return
    rows = []
    for target in TARGETS if args.target == "all" else (args.target,):
        with tempfile.TemporaryDirectory() as scratch:  # one process per target: libFuzzer runs once
            stats = Path(scratch) / "stats.json"
            command = [sys.executable, __file__, "--target", target, "--seconds", str(args.seconds)]
            command += ["--seed", str(args.seed), "--worker", str(stats)] + (
                ["--plain"] if args.plain else []
            )
            command += ["--runs", str(args.runs)] if args.runs is not None else []
            log = OUT / f"{target}.log"  # libFuzzer's own progress lines
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "w") as sink:
                subprocess.run(command, cwd=REPO, stdout=sink, stderr=sink, check=False)
            if not stats.exists():
                sys.exit(f"{target}: the fuzzing process ended without its figures; see {log}")
            rows.append(json.loads(stats.read_text()))
    print(f"{'target':<9} {'engine':<8} {'executions':>11} {'seconds':>8} {'crashes':>8}")
    for row in rows:
        print(
            f"{row['target']:<9} {row['engine']:<8} {row['executions']:>11} {row['seconds']:>8} {row['crashes']:>8}"
        )
        for kind, path in row["kinds"].items():
            print(f"    {kind}: {path}")


if __name__ == "__main__":
    main()
