"""Machine learning on flowlib: DDP process groups, torch artifacts, and the digits example."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from e2e import MARK, alive, make_project

import flowlib

REPO = Path(__file__).resolve().parents[1]

ALLSUM = (
    MARK
    + """
import os
import torch
import torch.distributed as dist
from flowlib import Distributed, current, operator, workflow

@operator(distributed=Distributed(nprocs=2, backend="gloo"))
def allsum(x: int) -> list[int]:
    mark("rank", f"{current.rank}")
    t = torch.tensor([x + current.rank])
    dist.all_reduce(t)
    return [int(t.item()), current.rank, current.world_size, int(os.environ["WORLD_SIZE"])]

@workflow
def group(x: int = 10) -> list[int]:
    return allsum(x)
"""
)


def _pids(project, name):  # type: ignore[no-untyped-def]
    return {int(line.split()[-1]) for line in project.marks(name)}


def _gone(pids: set[int]) -> bool:
    return not any(alive(p) for p in pids)


def test_ddp_returns_rank_0s_value_after_both_ranks_reduced(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", ALLSUM)
    done = project.flow("run", "p.py", "--json", timeout=240)
    assert done.code == 0, done
    # 10 + 11: both ranks took part in the all_reduce; rank 0 answered
    assert done.json()["outputs"] == [21, 0, 2, 2]
    assert sorted(line.split()[0] for line in project.marks("rank")) == ["0", "1"]
    assert len(_pids(project, "rank")) == 2
    logs = project.flow("logs", done.json()["run_id"]).out
    assert "rank 1" in logs


FAILING_RANK = (
    MARK
    + """
import time
import torch
import torch.distributed as dist
from flowlib import Distributed, current, operator, workflow

@operator(distributed=Distributed(nprocs=2, backend="gloo"))
def half_broken(x: int) -> int:
    mark("rank", f"{current.rank}")
    if current.rank == 1:
        raise RuntimeError("rank-1-marker")
    dist.all_reduce(torch.tensor([x]))  # rank 0 waits here for a peer that never comes
    time.sleep(60)
    return x

@workflow
def broken(x: int = 1) -> int:
    return half_broken(x)
"""
)


def test_a_failing_rank_fails_the_attempt_and_leaves_no_process(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", FAILING_RANK)
    done = project.flow("run", "p.py", "--json", timeout=240)
    assert done.code == 1, done
    node = done.json()["nodes"][0]
    assert node["status"] == "failed" and "rank-1-marker" in node["error"]["message"], node
    ranks = _pids(project, "rank")
    assert len(ranks) == 2
    assert _gone(ranks), f"rank processes left behind: {ranks}"


RESUMING = (
    MARK
    + """
import os, pathlib
import torch
import torch.distributed as dist
from flowlib import Distributed, current, operator, workflow

@operator(distributed=Distributed(nprocs=2, backend="gloo"), retries=1, retry_delay=0)
def steps(n: int) -> int:
    saved = current.checkpoint.load()
    start = saved["step"] if saved else 0
    total = torch.tensor([saved["total"] if saved else 0])
    for step in range(start, n):
        dist.all_reduce(t := torch.tensor([1]))  # completes only while both ranks are alive
        if current.rank == 0:
            mark("step", f"{step} attempt={current.attempt}")
        total += t
        if current.rank == 0:
            current.checkpoint.save({"step": step + 1, "total": int(total.item())}, step=step)
        dist.barrier()
        if step == 2 and current.rank == 1 and pathlib.Path("crash-once").exists():
            pathlib.Path("crash-once").unlink()
            os._exit(3)
    return int(total.item())

@workflow
def resumable(n: int = 5) -> int:
    return steps(n)
"""
)


def test_a_retried_ddp_node_resumes_from_its_checkpoint(tmp_path):
    project = make_project(tmp_path / "proj")
    project.write("p.py", RESUMING)
    project.write("crash-once", "")
    done = project.flow("run", "p.py", "--json", timeout=300)
    assert done.code == 0, done
    assert done.json()["nodes"][0]["attempts"] == 2
    assert done.json()["outputs"] == 2 * 5  # two ranks contribute 1 at each of 5 steps
    executed = [" ".join(line.split()[:2]) for line in project.marks("step")]
    assert executed == ["0 attempt=1", "1 attempt=1", "2 attempt=1", "3 attempt=2", "4 attempt=2"]


TENSORS = """
import torch
from torch import nn
from flowlib import operator, workflow

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.register_buffer("counts", torch.arange(6, dtype=torch.int64))

@operator
def make(seed: int) -> torch.Tensor:
    return torch.randn(1000, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

@operator
def half(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.bfloat16)

@operator
def build(seed: int) -> Net:
    torch.manual_seed(seed)
    return Net()

@operator
def weights(net: Net) -> dict[str, torch.Tensor]:
    return net.state_dict()

@workflow
def tensors(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, Net, dict[str, torch.Tensor]]:
    x = make(seed)
    net = build(seed)
    return x, half(x), net, weights(net)
"""


THREADS = """
import torch
from flowlib import operator, workflow

@operator
def threads(i: int) -> int:
    return torch.get_num_threads()

@workflow
def count(n: int = 2) -> list[int]:
    return threads.map(list(range(n)))
"""


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs torch to see two or more cores")
def test_a_worker_gives_torch_the_threads_of_its_cpus_unless_omp_num_threads_says(tmp_path):
    project = make_project(tmp_path / "p")
    project.write("p.py", THREADS)

    done = project.flow("run", "p.py", "--json", "--executor", "local")
    assert done.code == 0, done
    assert done.json()["outputs"] == [1, 1]  # cpus=1 each, not a thread per core

    chosen = project.flow("run", "p.py", "--json", "--no-cache", env={"OMP_NUM_THREADS": "2"})
    assert chosen.code == 0, chosen
    assert chosen.json()["outputs"] == [2, 2]


def test_tensor_and_module_artifacts_round_trip_exactly(tmp_path, monkeypatch):
    project = make_project(tmp_path / "proj")
    project.write("tensors.py", TENSORS)
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("FLOW_HOME", str(project.root / ".flow"))
    monkeypatch.syspath_prepend(str(project.root))
    from tensors import Net, tensors

    x, half, net, state = flowlib.run(tensors, params={"seed": 3}).outputs
    expected = torch.randn(1000, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert x.dtype == torch.float64 and torch.equal(x, expected)
    assert half.dtype == torch.bfloat16 and torch.equal(half, expected.to(torch.bfloat16))
    torch.manual_seed(3)
    fresh = Net()
    assert isinstance(net, Net)
    for key, value in fresh.state_dict().items():
        assert torch.equal(net.state_dict()[key], value) and torch.equal(state[key], value)
        assert state[key].dtype == value.dtype


@pytest.mark.slow
def test_the_digits_example_reaches_95_percent_and_is_cached_the_second_time(tmp_path):
    project = make_project(tmp_path / "proj")
    shutil.copy(REPO / "examples" / "digits" / "pipeline.py", project.root / "pipeline.py")
    args = ("run", "pipeline.py", "-p", "lrs=[0.01, 0.003]", "--json")
    first = project.flow(*args, timeout=300)
    assert first.code == 0, first
    best = first.json()["outputs"]
    assert best["test_accuracy"] >= 0.95, best
    second = project.flow(*args, timeout=300)
    assert second.code == 0
    assert {node["status"] for node in second.json()["nodes"]} == {"cached"}
    assert second.json()["outputs"] == best
    metrics = project.flow("metrics", first.json()["run_id"], "--json").json()
    assert {m["name"] for m in metrics} >= {"loss", "train_accuracy", "accuracy"}
    assert len([m for m in metrics if m["name"] == "loss" and m["node"] == "train[0]"]) == 15
