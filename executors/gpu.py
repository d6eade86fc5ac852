"""`gpu`: local workers plus exclusive GPU devices, handed out through `CUDA_VISIBLE_DEVICES`.

Devices: `FLOW_GPUS=0,1` beats `[executors.gpu] devices = [0, 1]`, which beats
discovery (integer ids in our own `CUDA_VISIBLE_DEVICES`, then `nvidia-smi -L`, then
torch in a child process, so the scheduler itself never initialises CUDA).
Ids follow nvidia-smi's PCI bus order: workers get `CUDA_DEVICE_ORDER=PCI_BUS_ID`
unless the environment already chooses an order.

An attempt asking for `gpus=k` (times `nprocs` when distributed) gets k devices no
other attempt holds, in this run or in any other on this host: one lock file per
device in the system temp folder, `flock`ed without blocking. This process and the
attempt's worker both hold it, so it is freed only once both are done with it:
after the result, a crash, a timeout or a cancel, and also when the scheduler is
killed (its workers die with it). CUDA reads `CUDA_VISIBLE_DEVICES` once, when it
initialises, so a warm worker could not switch devices: each GPU attempt runs in a
fresh one-shot worker started with its devices in its environment. `gpus=0`
attempts use the warm pool, whose workers see no GPU at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import cloudpickle

from executors.base import EventSink, TaskResult, TaskSpec
from executors.local import LocalExecutor, machine_memory
from executors.pool_worker import PoolTask, PoolWorker
from flowlib.errors import ConfigError
from flowlib.resources import Resources, per_attempt

# Another process's unlock wakes nothing here (flock has no notification, and a
# blocking flock in a thread could not be abandoned on cancel), so an attempt
# waiting for a device that another run holds looks again this often.
RETRY_S = 0.2


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


class GpuExecutor(LocalExecutor):
    """The local pool for `gpus=0` attempts; a one-shot worker on locked devices for the rest."""

    name = "gpu"

    def __init__(self) -> None:
        super().__init__()
        self.devices: list[int] = []
        self.source = ""
        self._locks = DeviceLocks(lock_folder(), [])
        self._waiting: deque[PoolTask] = deque()
        self._assigned: dict[int, list[int]] = {}  # one-shot worker pid -> its devices

    def start(self, settings: Mapping[str, Any]) -> None:
        self.devices, self.source = resolve_devices(settings)
        self._locks = DeviceLocks(lock_folder(), self.devices)
        self._locks.prepare()
        super().start(settings)

    def capacity(self) -> Resources:
        return Resources(cpus=self._size, gpus=len(self.devices), memory=machine_memory())

    def _spawn(self, env: Mapping[str, str] | None = None, pass_fds: Sequence[int] = ()) -> PoolWorker:
        # An empty CUDA_VISIBLE_DEVICES hides every GPU: a gpus=0 attempt cannot take one by accident.
        return super()._spawn({"CUDA_VISIBLE_DEVICES": "", **(env or {})}, pass_fds)

    def submit(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        if gpus_needed(task) == 0:
            return super().submit(task, on_event)
        return self._submit_gpu(task, on_event, held=False)

    def submit_held(self, task: TaskSpec, on_event: EventSink) -> Future[TaskResult]:
        if gpus_needed(task) == 0:
            return super().submit_held(task, on_event)
        return self._submit_gpu(task, on_event, held=True)  # waits unstarted: see _start_waiting_locked

    def release(self, task_ids: Collection[str]) -> None:
        task_ids = set(task_ids)
        with self._lock:
            waiting = [task for task in self._waiting if task.spec.task_id in task_ids]
            for task in waiting:
                task.held = False
        if waiting:
            self._wake()  # the loop starts them
        super().release(task_ids)

    def _submit_gpu(self, task: TaskSpec, on_event: EventSink, *, held: bool) -> Future[TaskResult]:
        count = gpus_needed(task)
        job = PoolTask.of(task, on_event, held=held)
        if count > len(self.devices):
            job.future.set_result(
                TaskResult.failure(
                    task.task_id,
                    "ResourceError",
                    f"node '{task.node}' asks for {count} GPUs; executor 'gpu' has {len(self.devices)} ({self.source})",
                )
            )
            return job.future
        with self._lock:
            self._ensure_loop_locked()
            self._waiting.append(job)
        self._wake()  # the loop starts it: see _loop_step
        return job.future

    def cancel(self, task_id: str) -> None:
        with self._lock:
            for task in list(self._waiting):
                if task.spec.task_id == task_id:
                    self._waiting.remove(task)
                    task.future.set_result(
                        TaskResult.failure(task_id, "Cancelled", "cancelled before it started")
                    )
                    return
        super().cancel(task_id)

    def shutdown(self) -> None:
        with self._lock:  # no one-shot worker starts after this, so the pool's shutdown sees them all
            self._closing = True
        super().shutdown()
        with self._lock:
            waiting = list(self._waiting)
            self._waiting.clear()
            self._locks.release_all()
            self._assigned.clear()
        for task in waiting:
            if not task.future.done():
                task.future.set_result(
                    TaskResult.failure(task.spec.task_id, "Cancelled", "the executor shut down")
                )

    # -- on the loop's thread (its own, or the scheduler's that drives it) ---------------------
    def _loop_step(self) -> float | None:
        with self._lock:
            held_elsewhere = self._start_waiting_locked()
        return RETRY_S if held_elsewhere else None

    def _start_waiting_locked(self) -> bool:
        """Start every waiting attempt whose devices can be claimed; True if another run holds some."""
        held_elsewhere = False
        for task in list(self._waiting):
            if self._closing:
                return False
            if task.held:
                continue
            count = gpus_needed(task.spec)
            try:
                devices = self._locks.acquire(count, task.spec.node)
            except OSError as exc:
                self._waiting.remove(task)
                message = f"cannot lock a GPU in {self._locks.folder}: {exc}"
                task.future.set_result(TaskResult.failure(task.spec.task_id, "GpuLockError", message))
                continue
            if devices is None:
                held_elsewhere = held_elsewhere or self._locks.free_here() >= count
                continue
            self._waiting.remove(task)
            self._start_one_shot(task, devices)
        return held_elsewhere

    def _start_one_shot(self, task: PoolTask, devices: list[int]) -> None:
        visible = ",".join(str(device) for device in devices)
        task.spec = dataclasses.replace(task.spec, env={**task.spec.env, "CUDA_VISIBLE_DEVICES": visible})
        env = {"CUDA_VISIBLE_DEVICES": visible}
        if "CUDA_DEVICE_ORDER" not in os.environ:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        try:
            worker = self._spawn(env, pass_fds=self._locks.fds(devices))
        except OSError as exc:
            self._locks.release(devices)
            task.future.set_result(
                TaskResult.failure(
                    task.spec.task_id, "WorkerDied", f"could not start a worker for GPUs {visible}: {exc}"
                )
            )
            return
        worker.one_shot = True
        worker.task = task
        self._workers.append(worker)
        self._assigned[worker.process.pid] = devices
        self._start_locked(worker, task, cloudpickle.dumps(task.spec))

    def _retired_locked(self, worker: PoolWorker) -> None:
        self._locks.release(self._assigned.pop(worker.process.pid, []))
