"""Compile a workflow in a short-lived subprocess, so a server never imports user code itself.

`python -m scheduler.server.compiling` reads a request on stdin ({"file", "workflow",
"params": {name: text, as -p gives}, "fixed": {name: value}}), run in the code snapshot's
folder, and writes {"plan": ...} or {"error", "kind"} on stdout. A pipeline whose import
crashes, hangs or calls os._exit fails only this process (and the run that asked for it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from flowlib.errors import FlowError
from flowlib.plan import Plan

TIMEOUT_S = 120.0


class CompileFailed(FlowError):
    """The workflow could not be compiled: `bad_input` when the parameters were wrong (a 4xx),
    else the pipeline itself failed to load or build (the run's error)."""

    def __init__(self, message: str, *, bad_input: bool) -> None:
        super().__init__(message)
        self.bad_input = bad_input


def compile_in_subprocess(
    root: Path, file: str, workflow: str | None, params: dict[str, str], fixed: dict[str, Any] | None = None
) -> Plan:
    """The plan of `workflow` in `file` of the snapshot at `root`, with `params` parsed by its annotations."""
    request = json.dumps({"file": file, "workflow": workflow, "params": params, "fixed": fixed or {}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOW_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "scheduler.server.compiling"],
            input=request,
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise CompileFailed(f"compiling {file} took longer than {TIMEOUT_S:g} s", bad_input=False) from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    except (ValueError, IndexError):
        answer = None
    if answer is None or done.returncode not in (0, 2):
        tail = " ".join(done.stderr.split())[-300:]
        how = (
            f"exited with code {done.returncode}"
            if done.returncode >= 0
            else f"was killed by signal {-done.returncode}"
        )
        raise CompileFailed(f"loading {file} {how}{': ' + tail if tail else ''}", bad_input=False)
    if "error" in answer:
        raise CompileFailed(answer["error"], bad_input=answer.get("kind") == "ParameterError")
    return Plan.from_json(answer["plan"])


def main() -> int:
    from flowlib.compile import compile_dag
    from flowlib.loading import select_workflow
    from flowlib.params import parse_params

    request = json.loads(sys.stdin.read())
    real_stdout = sys.stdout
    sys.stdout = sys.stderr  # what the pipeline prints must not mix with the answer
    try:
        wf = select_workflow(request["file"], request["workflow"])
        values = parse_params(wf, request["params"], request["fixed"])
        plan = compile_dag(wf.build(**values))
        answer: dict[str, Any] = {"plan": plan.to_json()}
        code = 0
    except FlowError as exc:
        answer, code = {"error": str(exc), "kind": type(exc).__name__}, 2
    except Exception as exc:
        answer, code = {"error": f"{type(exc).__name__}: {exc}", "kind": type(exc).__name__}, 2
    real_stdout.write(json.dumps(answer) + "\n")
    real_stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())
