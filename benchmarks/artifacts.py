"""Artifact store write + read of a large float32 tensor vs plain torch.save + fsync / torch.load.

    .venv/bin/python benchmarks/artifacts.py [--gib 1.0] [--repeat 3] [--folder /tmp]

Both sides write to the same disk (a temporary folder under --folder). The store
hashes while it writes and verifies the digest on every load (in a second thread,
while the tensor loads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from flowlib.store import ArtifactStore


def timed(fn):  # type: ignore[no-untyped-def]
    os.sync()  # the other side's dirty pages must not be flushed on this side's clock
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def plain_save(tensor: torch.Tensor, path: Path) -> None:
    with open(path, "wb") as file:
        torch.save(tensor, file)
        file.flush()
        os.fsync(file.fileno())


def run_plain(tensor: torch.Tensor, folder: Path, rows: dict[str, list[float]]) -> None:
    path = folder / "plain.pt"
    rows["plain write"].append(timed(lambda: plain_save(tensor, path))[0])
    seconds, loaded = timed(lambda: torch.load(path, weights_only=True))
    rows["plain read"].append(seconds)
    assert torch.equal(loaded, tensor)


def run_store(tensor: torch.Tensor, folder: Path, rows: dict[str, list[float]]) -> None:
    store = ArtifactStore(str(folder / "store"), fsync=True)
    seconds, ref = timed(lambda: store.put(tensor))
    rows["store write"].append(seconds)
    seconds, loaded = timed(lambda: store.get(ref.digest))
    rows["store read"].append(seconds)
    assert torch.equal(loaded, tensor) and loaded.dtype == tensor.dtype


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", default=tempfile.gettempdir())
    args = parser.parse_args()
    tensor = torch.randn(int(args.gib * (1 << 30)) // 4)
    rows: dict[str, list[float]] = {k: [] for k in ("plain write", "plain read", "store write", "store read")}
    for index in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=args.folder) as folder:
            sides = [
                lambda: run_plain(tensor, Path(folder), rows),
                lambda: run_store(tensor, Path(folder), rows),
            ]
            for side in sides if index % 2 == 0 else reversed(sides):  # alternate who goes first
                side()
    medians = {k: statistics.median(v) for k, v in rows.items()}
    print(f"{args.gib:g} GiB float32 tensor, median of {args.repeat}")
    print(f"{'':<14}{'plain s':>9}{'store s':>9}{'ratio':>7}")
    for what in ("write", "read"):
        plain, ours = medians[f"plain {what}"], medians[f"store {what}"]
        print(f"{what:<14}{plain:>9.2f}{ours:>9.2f}{ours / plain:>7.2f}")
    plain = medians["plain write"] + medians["plain read"]
    ours = medians["store write"] + medians["store read"]
    print(f"{'write + read':<14}{plain:>9.2f}{ours:>9.2f}{ours / plain:>7.2f}")


if __name__ == "__main__":
    main()
