"""Handwritten digits: split -> train an MLP per learning rate -> pick by validation -> test accuracy.

    flow run examples/digits/pipeline.py                 # ~0.97 test accuracy
    flow run examples/digits/pipeline.py -p epochs=20    # trains again; the split is reused

scikit-learn ships the data set (1,797 8x8 images), so nothing is downloaded.
"""

from typing import NamedTuple

import torch
from torch import nn

from flowlib import current, operator, workflow


class Splits(NamedTuple):
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


class Best(NamedTuple):
    lr: float
    val_accuracy: float
    test_accuracy: float


@operator
def split(seed: int, val_fraction: float, test_fraction: float) -> Splits:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test, n_val = int(len(x) * test_fraction), int(len(x) * val_fraction)
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    return Splits(x[train], y[train], x[val], y[val], x[test], y[test])


def make_model(hidden: int) -> nn.Module:
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(x).argmax(dim=1) == y).float().mean().item()


@operator
def train(
    lr: float, x: torch.Tensor, y: torch.Tensor, epochs: int, hidden: int, seed: int
) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = make_model(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    start = 0
    saved = current.checkpoint.load()  # a retry or a resume continues where the last attempt stopped
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        start = saved["epoch"]
        current.logger.info("resuming lr=%g from epoch %d", lr, start)
    for epoch in range(start, epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for batch in order.split(64):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        current.log_metric("loss", total / len(x), step=epoch)
        current.log_metric("train_accuracy", accuracy(model, x, y), step=epoch)
        current.checkpoint.save(
            {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}, step=epoch
        )
    return model.state_dict()


@operator
def evaluate(weights: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor, hidden: int) -> float:
    model = make_model(hidden)
    model.load_state_dict(weights)
    score = accuracy(model, x, y)
    current.log_metric("accuracy", score)
    return score


@operator
def pick_best(
    lrs: list[float],
    val_scores: list[float],
    models: list[dict[str, torch.Tensor]],
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    hidden: int,
) -> Best:
    best = max(range(len(lrs)), key=lambda i: val_scores[i])
    test_score = evaluate(models[best], x_test, y_test, hidden)  # a plain call outside a build
    current.logger.info("best lr=%g: validation %.4f, test %.4f", lrs[best], val_scores[best], test_score)
    return Best(lrs[best], val_scores[best], test_score)


@workflow
def digits(
    lrs: list[float] = [0.001, 0.003, 0.01],  # noqa: B006 (a workflow default is read, never mutated)
    epochs: int = 15,
    hidden: int = 64,
    seed: int = 0,
) -> Best:
    data = split(seed, val_fraction=0.15, test_fraction=0.2)
    models = train.map(lrs, x=data.x_train, y=data.y_train, epochs=epochs, hidden=hidden, seed=seed)
    val_scores = evaluate.map(models, x=data.x_val, y=data.y_val, hidden=hidden)
    return pick_best(lrs, val_scores, models, data.x_test, data.y_test, hidden)
