"""Real `flow server` processes for tests: started on free ports over one project's database."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e import FLOW, Project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    token: str | None = None
    stopped: bool = field(default=False)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = "default",
        raw: bytes | None = None,
    ) -> tuple[int, Any]:
        """(status, parsed JSON body) of one API request."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header(
            "Content-Type", "application/octet-stream" if raw is not None else "application/json"
        )
        token = self.token if token == "default" else token
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text)
            except ValueError:
                return exc.code, text.decode(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.stopped = True

    def terminate(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self.stopped = True
        return code

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def start_server(
    project: Project,
    *args: str,
    env: dict[str, str] | None = None,
    token: str | None = None,
    name: str = "server",
) -> Server:
    for _ in range(5):  # the free port may be taken before the server binds it: then another
        port = free_port()
        log = project.root / f"{name}-{port}.log"
        process = subprocess.Popen(
            [FLOW, "server", "--port", str(port), *args],
            cwd=project.root,
            env={**project.env, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=open(log, "w"),  # noqa: SIM115 (the server writes it until it ends)
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server = Server(process, f"http://127.0.0.1:{port}", log, token)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(server.url + "/api/health", timeout=2):
                    return server
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        else:
            server.kill()
            raise AssertionError(f"the server did not answer within 60 s:\n{server.output()}")
        if not (process.returncode == 2 and "cannot listen on" in server.output()):
            raise AssertionError(f"the server exited with {process.returncode}:\n{server.output()}")
    raise AssertionError(f"no free port the server could listen on:\n{server.output()}")


def wait_for(predicate: Any, timeout: float = 60.0, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None
