"""Check, on a machine with real GPUs, that two `gpus=1` nodes run at once on distinct CUDA devices,
and that a `Distributed(nprocs=<every GPU>, backend="nccl")` node all-reduces over NCCL across them.

    python benchmarks/gpu_check.py                  # on the GPU machine: both checks
    python benchmarks/gpu_check.py --only nccl      # or --only devices
    python benchmarks/gpu_check.py --simulate       # anywhere: FLOW_GPUS=0,1, CPU tensors, gloo for nccl

Needs only this repo installed (`pip install -c constraints.txt -e .`) and the machine's
torch. Each check writes a small torch pipeline into a temp folder, runs it with
`flow run --executor gpu --json` (devices discovered, not declared: FLOW_GPUS is
removed), and prints what each node (or rank) saw and a verdict. Exit 0: every check
passed; 1: a check failed; 2: this machine cannot show it (no CUDA device, or only one;
nothing is run without CUDA). Finishes within about four minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

PIPELINE = """
import os, time
from flowlib import operator, workflow, current, Resources

@operator(resources=Resources(gpus=1), cache=False)
def probe(i: int) -> dict:
    import torch
    start = time.time()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    simulated = os.environ.get("GPU_CHECK_SIMULATE") == "1"  # --simulate: the same path on CPU
    x = torch.randn(2048, 2048, device="cpu" if simulated else "cuda")
    checksum = float((x @ x).sum().item())
    if simulated:
        name, uuid, pci, count = "simulated", f"SIM-{visible}", f"sim:{visible}", 0
    else:
        props = torch.cuda.get_device_properties(0)
        name, uuid, count = torch.cuda.get_device_name(0), str(getattr(props, "uuid", "")), torch.cuda.device_count()
        pci = "{:04x}:{:02x}:{:02x}".format(
            getattr(props, "pci_domain_id", 0), getattr(props, "pci_bus_id", 0), getattr(props, "pci_device_id", 0)
        )
    time.sleep(2.0)  # hold the device so the two nodes overlap
    return {
        "node": i, "gpus": current.gpus, "visible": visible, "name": name, "uuid": uuid, "pci": pci,
        "count_seen": count, "checksum": checksum, "start": start, "end": time.time(),
    }

@workflow
def gpu_check() -> list[dict]:
    return [probe(0), probe(1)]
"""

NCCL = """
import os, time
import torch
import torch.distributed as dist
from flowlib import Distributed, Resources, current, operator, workflow

SIMULATED = os.environ.get("GPU_CHECK_SIMULATE") == "1"

@operator(resources=Resources(gpus=1), distributed=Distributed(nprocs=NPROCS, backend=BACKEND), cache=False)
def allreduce(mib: int) -> list:
    device = torch.device("cpu" if SIMULATED else "cuda")
    if SIMULATED:
        name, uuid = "simulated", f"SIM-{os.environ.get('CUDA_VISIBLE_DEVICES')}"
    else:
        props = torch.cuda.get_device_properties(0)
        name, uuid = torch.cuda.get_device_name(0), str(getattr(props, "uuid", ""))
    small = torch.tensor([float(current.rank + 1)], device=device)
    dist.all_reduce(small)
    big = torch.ones(mib * 2**18, device=device)  # float32: mib MiB
    dist.all_reduce(big)  # warm-up
    if not SIMULATED:
        torch.cuda.synchronize()
    start = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        dist.all_reduce(big)
    if not SIMULATED:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / rounds
    me = {
        "rank": current.rank, "world": current.world_size, "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "name": name, "uuid": uuid, "sum": float(small.item()), "backend": dist.get_backend(),
        "seconds": seconds, "bus_gb_s": 2 * (current.world_size - 1) / current.world_size * mib / 1024 / seconds,
    }
    everyone = [None] * current.world_size
    dist.all_gather_object(everyone, me)
    return everyone

@workflow
def nccl_check(mib: int = 256) -> list:
    return allreduce(mib)
"""


def device_count() -> tuple[int, str]:
    """How many CUDA devices this process sees, and a line saying how that was found."""
    try:
        import torch
    except ImportError:
        return 0, "torch is not installed, so no CUDA device can be used"
    if not torch.cuda.is_available():
        return 0, f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    count = torch.cuda.device_count()
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(count))
    return count, f"torch {torch.__version__} sees {count} CUDA device(s): {names}"


def verdict(nodes: list[dict[str, Any]]) -> tuple[bool, str]:
    """Did the nodes run on real, distinct CUDA devices (and at the same time)?"""
    if len(nodes) != 2:
        return False, f"FAIL: expected two node results, got {len(nodes)}"
    a, b = nodes
    problems = []
    for node in nodes:
        if not node.get("visible") or len(node.get("gpus") or []) != 1:
            problems.append(f"node saw CUDA_VISIBLE_DEVICES={node.get('visible')!r}, gpus={node.get('gpus')}")
    if a.get("visible") == b.get("visible"):
        problems.append(f"both were given CUDA_VISIBLE_DEVICES={a.get('visible')!r}")
    same_uuid = a.get("uuid") and a.get("uuid") == b.get("uuid")
    same_pci = a.get("pci") and a.get("pci") == b.get("pci") and a.get("pci") != "0000:00:00"
    if same_uuid or same_pci:
        problems.append(f"both ran on the same physical device (uuid {a.get('uuid')}, pci {a.get('pci')})")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    overlap = a["start"] < b["end"] and b["start"] < a["end"]
    when = "at the same time" if overlap else "one after the other (no overlap)"
    return True, (
        f"PASS: the two gpus=1 nodes ran {when} on distinct CUDA devices: "
        f"{a['visible']} ({a['name']}, {a['pci']}, {a['uuid']}) and {b['visible']} ({b['name']}, {b['pci']}, {b['uuid']})"
    )


def nccl_verdict(ranks: list[dict[str, Any]], nprocs: int, backend: str, mib: int = 256) -> tuple[bool, str]:
    """Did every rank take part in the all-reduce over `backend`, each on its own device?"""
    problems = []
    if len(ranks) != nprocs:
        problems.append(f"expected {nprocs} ranks, got {len(ranks)}")
    want = float(sum(range(1, nprocs + 1)))
    for rank in ranks:
        if rank.get("sum") != want:
            problems.append(f"rank {rank.get('rank')} reduced {rank.get('sum')}, not {want}")
        if rank.get("backend") != backend:
            problems.append(f"rank {rank.get('rank')} used backend {rank.get('backend')!r}, not {backend!r}")
    devices = [(r.get("visible"), r.get("uuid")) for r in ranks]
    if len({v for v, _ in devices}) != len(devices) or len({u for _, u in devices if u}) != len(devices):
        problems.append(f"ranks shared devices: {devices}")
    if problems:
        return False, "FAIL: " + "; ".join(problems)
    speed = min(r["bus_gb_s"] for r in ranks)
    return True, (
        f"PASS: {nprocs} ranks all-reduced over {backend} on distinct devices "
        f"({', '.join(f'{v} {u}' for v, u in devices)}); {mib} MiB all-reduce bus bandwidth {speed:.1f} GB/s"
    )


def _flow() -> list[str]:
    beside = Path(sys.executable).with_name("flow")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("flow")
    return [found] if found else [sys.executable, "-c", "from flowlib.cli.main import main; main()"]


def run_pipeline(source: str, simulate: bool, devices: int, params: tuple[str, ...] = ()) -> Any:
    """Run `source` with `flow run --executor gpu --json` in a temp project; its outputs, or None."""
    with tempfile.TemporaryDirectory(prefix="flowlib-gpu-check-") as folder:
        root = Path(folder)
        (root / "flow.toml").write_text('[flow]\nexecutor = "gpu"\n')
        (root / "pipeline.py").write_text(source)
        env = {key: value for key, value in os.environ.items() if not key.startswith("FLOW_")}
        env["FLOW_HOME"] = str(root / ".flow")
        if simulate:
            env.update(FLOW_GPUS=",".join(map(str, range(devices))), GPU_CHECK_SIMULATE="1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        try:
            done = subprocess.run(
                [*_flow(), "run", "pipeline.py", "--executor", "gpu", "--json", *params],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=110,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            print("FAIL: `flow run` did not finish within 110 s")
            return None
        print(f"flow run exited {done.returncode}")
        if done.stderr.strip():
            print("stderr:\n" + textwrap.indent(done.stderr.strip()[-4000:], "  "))
        try:
            result = json.loads(done.stdout)
        except ValueError:
            print(f"FAIL: `flow run --json` printed no JSON:\n{done.stdout[-2000:]}")
            return None
        if result.get("status") != "succeeded":
            print(f"FAIL: the run ended {result.get('status')}: {json.dumps(result.get('nodes'), indent=1)}")
            return None
        return result["outputs"]


def check_devices(count: int, simulate: bool) -> int:
    """Two `gpus=1` nodes at once: distinct devices (exit-code style result)."""
    print("== two gpus=1 nodes on distinct devices")
    nodes = run_pipeline(PIPELINE, simulate, 2)
    if nodes is None:
        return 1
    for node in nodes:
        print("node:", json.dumps(node, sort_keys=True))
    ok, text = verdict(nodes)
    if count == 1:
        a, b = nodes
        apart = not (a["start"] < b["end"] and b["start"] < a["end"])
        print(
            f"only 1 CUDA device exists on this machine, so distinct devices cannot be shown; both nodes "
            f"ran on it ({a['name']}, {a['uuid']}) {'one after the other, never sharing it' if apart else 'AT THE SAME TIME (shared: wrong)'}"
        )
        return 2 if apart else 1
    print(text)
    return 0 if ok else 1


def check_nccl(count: int, simulate: bool) -> int:
    """One distributed node with a rank per device, all-reducing over NCCL (gloo when simulated)."""
    backend = "gloo" if simulate else "nccl"
    nprocs = max(count, 1)
    print(f"== Distributed(nprocs={nprocs}, backend={backend!r}), one device per rank")
    source = NCCL.replace("NPROCS", str(nprocs)).replace("BACKEND", repr(backend))
    mib = 8 if simulate else 256  # on CPU only the plumbing is checked, not the speed
    ranks = run_pipeline(source, simulate, nprocs, ("-p", f"mib={mib}"))
    if ranks is None:
        return 1
    for rank in ranks:
        print("rank:", json.dumps(rank, sort_keys=True))
    ok, text = nccl_verdict(ranks, nprocs, backend, mib)
    print(text)
    if ok and count == 1:
        print("only 1 CUDA device exists on this machine: NCCL ran with one rank; across GPUs needs two")
        return 2
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    simulate = "--simulate" in argv
    only = (
        argv[argv.index("--only") + 1] if "--only" in argv and argv.index("--only") + 1 < len(argv) else None
    )
    if only not in (None, "devices", "nccl"):
        print(f"--only takes 'devices' or 'nccl', not {only!r}")
        return 2
    count, how = (
        (2, "--simulate: two devices declared with FLOW_GPUS=0,1, tensors on the CPU, gloo for nccl")
        if simulate
        else device_count()
    )
    print(how)
    if count == 0:
        print("no CUDA device: this check needs a machine with GPUs; nothing was run")
        return 2
    smi = shutil.which("nvidia-smi")
    if smi and not simulate:
        listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout.strip()
        print("nvidia-smi -L:\n" + textwrap.indent(listed or "(nothing)", "  "))
    codes = []
    if only in (None, "devices"):
        codes.append(check_devices(count, simulate))
    if only in (None, "nccl"):
        codes.append(check_nccl(count, simulate))
    return 1 if 1 in codes else max(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
