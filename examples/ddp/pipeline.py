"""The digits MLP trained data-parallel: two gloo ranks on CPU with DistributedDataParallel.

    flow run examples/ddp/pipeline.py

Each rank trains on its half of every batch; gradients are averaged by DDP, so
both ranks hold the same model, and the node's output is rank 0's.
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


@operator
def load(seed: int, test_fraction: float) -> Data:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    return Data(x[order[n_test:]], y[order[n_test:]], x[order[:n_test]], y[order[:n_test]])


@operator(distributed=Distributed(nprocs=2, backend="gloo"))
def train_ddp(x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = DistributedDataParallel(nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    mine = torch.arange(current.rank, len(x), current.world_size)  # this rank's share of the data
    for epoch in range(epochs):
        order = mine[torch.randperm(len(mine))]
        total = torch.zeros(1)
        for batch in order.split(32):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()  # DDP all-reduces the gradients here
            optimizer.step()
            total += loss.detach() * len(batch)
        dist.all_reduce(total)
        if current.rank == 0:
            current.log_metric("loss", total.item() / len(x), step=epoch)
    return model.module.state_dict()


@operator
def test_accuracy(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> float:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    model.load_state_dict(weights)
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@workflow
def ddp(epochs: int = 15, lr: float = 0.01, seed: int = 0) -> float:
    data = load(seed, test_fraction=0.2)
    weights = train_ddp(data.x_train, data.y_train, epochs, lr, seed)
    return test_accuracy(weights, data.x_test, data.y_test)
