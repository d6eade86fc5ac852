"""schemathesis against a live `flow server`'s own OpenAPI document: no 5xx, no response that breaks
its schema, no undocumented status or content type, with a token and without."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e import make_project
from server import start_server

ST = shutil.which("st") or str(Path(sys.executable).with_name("st"))

pytestmark = pytest.mark.skipif(
    not Path(ST).exists(), reason="schemathesis is not installed (pip install -e '.[dev]')"
)

PIPELINE = """
from flowlib import current, operator, workflow

@operator
def square(x: int) -> int:
    print("squaring", x)
    current.log_metric("x", float(x), step=x)
    return x * x

@workflow
def w(n: int = 3) -> list[int]:
    return square.map(list(range(n)))
"""


def test_the_api_holds_to_its_openapi_document_under_fuzzing(tmp_path: Path) -> None:
    project = make_project(tmp_path / "proj")
    project.write("p.py", PIPELINE)
    token = project.flow("token", "create", "fuzzer", "--admin").out.strip()
    server = start_server(project, token=token)
    try:
        env = {"FLOW_SERVER": server.url, "FLOW_TOKEN": token}
        assert project.flow("run", "p.py", "--server", server.url, env=env).code == 0
        assert project.flow("deploy", "p.py", "--name", "fuzzed", env=env).code == 0
        done = subprocess.run(
            [
                ST,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
                "--max-examples",
                "15",
                "--request-timeout",
                "20",
                "--generation-deterministic",
                "--header",
                f"Authorization: Bearer {token}",
            ],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert "passed" in done.stdout
    finally:
        server.kill()
