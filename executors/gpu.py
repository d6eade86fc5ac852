"""`gpu`: the local pool plus exclusive GPU devices, handed out through `CUDA_VISIBLE_DEVICES`.

Composed of two parts: the host's devices and their per-host lock files
(executors.devices), and the local pool (executors.pool), which runs `gpus=0`
attempts on its warm workers, whose environment hides every GPU. An attempt asking
for `gpus=k` (times `nprocs` when distributed) is claimed by `GpuSeats`, the pool's
placement: it waits until k devices no other attempt holds, in this run or any other
on this host, can be locked, then runs in a fresh one-shot worker started with them
in `CUDA_VISIBLE_DEVICES` (CUDA reads it once, when it initialises, so a warm worker
could not switch devices). The lock files are held by this process and by the
attempt's worker, so a device is freed once both are done with it: after the result,
a crash, a timeout or a cancel, and also when the scheduler is killed (its workers
die with it). Ids follow nvidia-smi's PCI bus order: workers get
`CUDA_DEVICE_ORDER=PCI_BUS_ID` unless the environment already chooses an order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from executors.base import TaskSpec, machine_memory
from executors.devices import DeviceLocks, gpus_needed, lock_folder, resolve_devices
from executors.local import PooledExecutor, pool_settings
from executors.placement import Seat, Unplaceable
from executors.pool import WorkerPool
from flowlib.resources import Resources

# Another process's unlock wakes nothing here (flock has no notification, and a
# blocking flock in a thread could not be abandoned on cancel), so an attempt
# waiting for a device that another run holds looks again this often.
RETRY_S = 0.2


class GpuSeats:
    """The pool's placement for GPU attempts: a seat is a set of locked devices."""

    retry_s = RETRY_S

    def __init__(self, locks: DeviceLocks, source: str) -> None:
        self.locks, self.source = locks, source

    def claims(self, spec: TaskSpec) -> bool:
        return gpus_needed(spec) > 0

    def seat(self, spec: TaskSpec) -> Seat | None:
        count = gpus_needed(spec)
        if count > len(self.locks.devices):
            raise Unplaceable(
                "ResourceError",
                f"node '{spec.node}' asks for {count} GPUs; executor 'gpu' has {len(self.locks.devices)} "
                f"({self.source})",
            )
        try:
            devices = self.locks.acquire(count, spec.node)
        except OSError as exc:
            raise Unplaceable("GpuLockError", f"cannot lock a GPU in {self.locks.folder}: {exc}") from None
        if devices is None:
            return None
        env = {"CUDA_VISIBLE_DEVICES": ",".join(str(device) for device in devices)}
        if "CUDA_DEVICE_ORDER" not in os.environ:
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        return Seat(env, tuple(self.locks.fds(devices)), lambda: self.locks.release(devices))


class GpuExecutor(PooledExecutor):
    """The local pool for `gpus=0` attempts; a one-shot worker on locked devices for the rest."""

    name = "gpu"

    def __init__(self) -> None:
        self.devices: list[int] = []
        self.source = ""
        self._locks = DeviceLocks(lock_folder(), [])

    def start(self, settings: Mapping[str, Any]) -> None:
        self.devices, self.source = resolve_devices(settings)
        self._locks = DeviceLocks(lock_folder(), self.devices)
        self._locks.prepare()
        size, start = pool_settings(settings, self.name)
        # An empty CUDA_VISIBLE_DEVICES hides every GPU: a gpus=0 attempt cannot take one by accident.
        pool = WorkerPool(
            size, start=start, env={"CUDA_VISIBLE_DEVICES": ""}, placement=GpuSeats(self._locks, self.source)
        )
        self.use(pool)

    def capacity(self) -> Resources:
        return Resources(cpus=self.pool.size, gpus=len(self.devices), memory=machine_memory())

    def shutdown(self) -> None:
        super().shutdown()
        self._locks.release_all()
