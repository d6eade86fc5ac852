"""The GPUs of this host: which device ids it offers, and exclusive claims on them across runs.

Devices: `FLOW_GPUS=0,1` beats `[executors.gpu] devices = [0, 1]`, which beats
discovery (integer ids in our own `CUDA_VISIBLE_DEVICES`, then `nvidia-smi -L`, then
torch in a child process, so the scheduler itself never initialises CUDA).

A claim is one lock file per device in the system temp folder, `flock`ed without
blocking: who holds it, holds it on this host, in this run or in any other.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from executors.base import TaskSpec
from flowlib.errors import ConfigError
from flowlib.resources import per_attempt


def lock_folder() -> Path:
    """The per-host folder of device lock files (honours TMPDIR)."""
    return Path(tempfile.gettempdir()) / "flowlib-gpu-locks"


def gpus_needed(spec: TaskSpec) -> int:
    """Devices one attempt needs: its `gpus` per rank times the ranks."""
    return int(per_attempt(spec.resources, spec.distributed).gpus)


# -- which devices ------------------------------------------------------------------------
def _parse_ids(text: str, where: str) -> list[int]:
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not all(part.isdigit() for part in parts):
        raise ConfigError(f"{where}={text!r}: expected comma-separated GPU ids like 0,1")
    return _unique([int(part) for part in parts], where)


def _unique(ids: list[int], where: str) -> list[int]:
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{where}: a GPU id is listed twice in {ids}")
    return ids


def _from_visible(value: str) -> list[int] | None:
    """Ids in a CUDA_VISIBLE_DEVICES value; None when it names devices another way (UUIDs)."""
    ids: list[int] = []
    for part in (part.strip() for part in value.split(",")):
        if not part.isdigit():
            if not ids and part.startswith(("GPU-", "MIG-")):
                return None
            break  # CUDA stops at the first entry that is not a valid id ("-1" hides all)
        ids.append(int(part))
    return ids


def _from_nvidia_smi() -> list[int] | None:
    try:
        done = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    ids = [int(match) for match in re.findall(r"^GPU (\d+):", done.stdout, re.MULTILINE)]
    return ids if done.returncode == 0 and ids else None


def _from_torch() -> list[int]:
    """Ask torch, in a child process: initialising CUDA here would pin this process to it."""
    if importlib.util.find_spec("torch") is None:
        return []
    code = "import torch; print(torch.cuda.device_count())"
    env = {**os.environ, "CUDA_DEVICE_ORDER": os.environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            stdin=subprocess.DEVNULL,
        )
        return list(range(int(done.stdout.strip().splitlines()[-1])))
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return []


def resolve_devices(
    settings: Mapping[str, Any], environ: Mapping[str, str] = os.environ
) -> tuple[list[int], str]:
    """Return the device ids this host offers and where they came from."""
    if "FLOW_GPUS" in environ:
        return _parse_ids(environ["FLOW_GPUS"], "FLOW_GPUS"), "FLOW_GPUS"
    if "devices" in settings:
        where = "[executors.gpu] devices"
        devices = settings["devices"]
        if not isinstance(devices, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in devices
        ):
            raise ConfigError(f"{where}: expected a list of GPU ids like [0, 1], got {devices!r}")
        return _unique(list(devices), where), where
    if "CUDA_VISIBLE_DEVICES" in environ:
        visible = _from_visible(environ["CUDA_VISIBLE_DEVICES"])
        if visible is not None:
            return visible, "CUDA_VISIBLE_DEVICES"
    found = _from_nvidia_smi()
    if found is not None:
        return found, "nvidia-smi"
    return _from_torch(), "torch"


# -- per-host exclusive claims ------------------------------------------------------------
class DeviceLocks:
    """One `flock`ed file per device: who holds it, holds it on this host."""

    def __init__(self, folder: Path, devices: Sequence[int]) -> None:
        self.folder, self.devices = folder, list(devices)
        self.held: dict[int, int] = {}  # device -> open lock file descriptor

    def prepare(self) -> None:
        """Create the folder and the lock files, or say clearly why they cannot be."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if self.folder.stat().st_uid == os.getuid():
                self.folder.chmod(0o1777)  # shared by every user's runs, like /tmp itself
            for device in self.devices:
                os.close(self._open(device))
        except OSError as exc:
            raise ConfigError(
                f"executor 'gpu': cannot use the GPU lock folder {self.folder}: {exc}"
            ) from None

    def _open(self, device: int) -> int:
        fd = os.open(self.folder / f"gpu-{device}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            os.fchmod(fd, 0o666)
        except OSError:
            pass  # another user's file: open is what matters
        return fd

    def acquire(self, count: int, holder: str) -> list[int] | None:
        """Claim `count` devices nobody holds, all or none."""
        got: list[int] = []
        for device in self.devices:
            if len(got) == count:
                break
            if device in self.held:
                continue
            fd = self._open(device)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self.held[device] = fd
            with contextlib.suppress(OSError):  # who holds it, for a curious user; the lock is what counts
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {holder}\n".encode(), 0)
            got.append(device)
        if len(got) < count:
            self.release(got)
            return None
        return got

    def free_here(self) -> int:
        """Devices this process does not hold (others may)."""
        return len(self.devices) - len(self.held)

    def fds(self, devices: Sequence[int]) -> list[int]:
        return [self.held[device] for device in devices]

    def release(self, devices: Sequence[int]) -> None:
        for device in devices:
            fd = self.held.pop(device, None)
            if fd is not None:
                os.close(fd)  # the lock goes once the worker's inherited copy is closed too

    def release_all(self) -> None:
        self.release(list(self.held))
