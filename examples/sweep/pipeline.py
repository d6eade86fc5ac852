"""Handwritten digits tuned with `flow sweep`: the learning rate and hidden size of an MLP.

    flow sweep examples/sweep/pipeline.py \\
        --space lr=loguniform(1e-4,1e-1) --space hidden=int(16,256) \\
        --objective val_accuracy --direction maximize --trials 20 --pruner median --parallel 2

`prepare` depends on no tuned parameter, so it runs once for the whole sweep and every trial
reads its tensors from the cache. `train` logs the validation accuracy after each epoch with
`step=`: the median pruner stops a trial whose accuracy trails the others' at the same epoch.
scikit-learn ships the data set (1,797 8x8 images), so nothing is downloaded.
"""

from typing import NamedTuple

import torch
from torch import nn

from flowlib import current, operator, workflow


class Data(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor


class Scores(NamedTuple):
    val_accuracy: float
    train_loss: float


def shifted(images: torch.Tensor) -> torch.Tensor:
    """Each 8x8 image and its copies moved one pixel up, down, left and right."""
    grid = images.reshape(-1, 8, 8)
    moves = [grid]
    for shift, dim in ((1, 1), (-1, 1), (1, 2), (-1, 2)):
        moved = torch.roll(grid, shift, dims=dim)
        edge = 0 if shift == 1 else -1
        if dim == 1:
            moved[:, edge, :] = 0
        else:
            moved[:, :, edge] = 0
        moves.append(moved)
    return torch.cat(moves).reshape(-1, 64)


@operator
def prepare(seed: int, val_fraction: float) -> Data:
    """Load, split, augment the training images with shifted copies, and standardize."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = int(len(x) * val_fraction)
    val, train = order[:n_val], order[n_val:]
    x_train, y_train = shifted(x[train]), y[train].repeat(5)
    mean, std = x_train.mean(dim=0), x_train.std(dim=0) + 1e-6
    return Data((x_train - mean) / std, y_train, (x[val] - mean) / std, y[val])


def make_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator,
) -> float:
    """One pass over the training set in shuffled batches of 64; returns the mean loss."""
    total = 0.0
    for batch in torch.randperm(len(x), generator=generator).split(64):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    return total / len(x)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@operator
def train(data: Data, lr: float, hidden: int, epochs: int, seed: int) -> Scores:
    """Train an MLP, logging the validation accuracy after each epoch (the pruner reads it)."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = make_model(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss, score = float("nan"), 0.0
    for epoch in range(epochs):
        loss = train_epoch(model, optimizer, data.x_train, data.y_train, generator)
        score = accuracy(model, data.x_val, data.y_val)
        current.log_metric("val_accuracy", score, step=epoch)
        current.log_metric("train_loss", loss, step=epoch)
    return Scores(score, loss)


@workflow
def digits_sweep(lr: float = 1e-3, hidden: int = 64, epochs: int = 15, seed: int = 0) -> Scores:
    return train(prepare(seed, val_fraction=0.2), lr, hidden, epochs, seed)
