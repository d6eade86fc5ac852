"""The digits MLP trained data-parallel across two machines: one gloo rank on each of two hosts.

    flow run examples/ddp/two_nodes.py --executor ssh      # two ssh hosts
    flow run examples/ddp/two_nodes.py --executor ray      # a Ray cluster of two or more nodes

For `ssh`, a flow.toml in the folder you run from names the hosts (see
docs/training-across-machines.md for the whole walk-through):

    [executors.ssh]
    hosts = ["me@trainer-1:22", "me@trainer-2:22"]
    identity_file = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"     # both hosts' keys, verified
    python = "/opt/flow/bin/python"        # on the hosts: flowlib, torch and scikit-learn installed
    workdir = "~/.flow-remote"

flowlib reserves both hosts before any rank starts, sets RANK, LOCAL_RANK,
WORLD_SIZE, NODE_RANK and MASTER_ADDR (rank 0's host) on each rank, and
initialises the process group. Rank 0 saves a checkpoint after every epoch: when
a host is lost mid-training the attempt fails, every rank stops, and the retry
places the group again and continues from the last epoch saved.
"""

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from flowlib import Distributed, current, operator, workflow


class Data(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


@operator
def load(seed: int, test_fraction: float) -> Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    return Data(x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]])


@operator(distributed=Distributed(nprocs=1, nnodes=2, backend="gloo"), retries=2, retry_delay=1.0)
def train_ddp(x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = DistributedDataParallel(mlp())
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    saved = current.checkpoint.load()  # every rank reads the same checkpoint: its host got a copy
    start = 0
    if saved is not None:
        model.module.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start = saved["epoch"]
        current.logger.info("resuming at epoch %d (attempt %d)", start, current.attempt)
    mine = torch.arange(current.rank, len(x), current.world_size)  # this rank's share of the data
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(start, epochs):
        generator.manual_seed(seed + epoch)  # a resumed epoch shuffles as it would have
        order = mine[torch.randperm(len(mine), generator=generator)]
        total = torch.zeros(1)
        for batch in order.split(32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # DDP all-reduces the gradients across both machines here
            optimizer.step()
            total += loss.detach() * len(batch)
        dist.all_reduce(total)
        if current.rank == 0:
            current.log_metric("loss", total.item() / len(x), step=epoch)
            state = {
                "epoch": epoch + 1,
                "model": model.module.state_dict(),
                "optimizer": optimizer.state_dict(),
            }
            current.checkpoint.save(state, step=epoch)
    return model.module.state_dict()


@operator
def test_accuracy(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    model = mlp()
    model.load_state_dict(weights)
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@workflow
def ddp_two_nodes(epochs: int = 15, lr: float = 0.01, seed: int = 0) -> float:
    data = load(seed, test_fraction=0.2)
    weights = train_ddp(data.x_train, data.y_train, epochs, lr, seed)
    return test_accuracy(weights, data.x_test, data.y_test)
