"""Which installed distributions provide a module, and their versions: an operator's fingerprint
names the packages its code uses, so upgrading one changes its cache key."""

from __future__ import annotations

import csv
import importlib.metadata
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib.metadata import Distribution


def providers() -> dict[str, list[Distribution]]:
    """Each top-level module name and the installed distributions that provide it.

    What `importlib.metadata.packages_distributions()` finds (a distribution's `top_level.txt`,
    else the top-level names of the `.py` files it installed), but without parsing every
    distribution's metadata for its name, which is most of that function's time (0.2-0.4 s in
    an environment with torch): names are read only for the distributions asked about.
    """
    found: dict[str, list[Distribution]] = defaultdict(list)
    for dist in importlib.metadata.distributions():
        names = (dist.read_text("top_level.txt") or "").split()
        if not names:
            record = dist.read_text("RECORD")
            # RECORD read as text (PackagePath objects for every file were the slow part), an
            # older install's file list as importlib gives it
            paths = _record_paths(record) if record is not None else [str(f) for f in dist.files or ()]
            names = _top_levels(paths)
        for name in names:
            found[name].append(dist)
    return dict(found)


def _record_paths(record: str) -> Iterator[str]:
    """The paths a RECORD lists (a CSV file: path, hash, size a line)."""
    for line in record.splitlines():
        # the CSV reader only for a quoted path (a comma in it): it is slower than a split
        yield next(csv.reader([line]))[0] if '"' in line else line.rsplit(",", 2)[0]


def _top_levels(paths: Iterable[str]) -> set[str]:
    """The top-level names of the `.py` files among `paths`, as importlib infers them: the first
    part of a nested path, a top-level file's stem."""
    names = set()
    for path in paths:
        if path.endswith(".py"):
            parts = [part for part in path.split("/") if part not in ("", ".")]  # as PurePosixPath has them
            names.add(parts[0] if len(parts) > 1 else parts[0][:-3])
    return names


def distribution_versions(
    module_name: str, installed: Callable[[], Mapping[str, list[Distribution]]]
) -> tuple[tuple[str, str], ...]:
    """The installed distributions (name, version) that provide `module_name`, sorted; `installed`
    gives `providers()`, asked for only when needed (it reads every distribution's file list)."""
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names:
        return ()
    if top == "flowlib":
        names = ["flowlib"]
    else:
        names = sorted({dist.metadata["Name"] for dist in installed().get(top, ())})
    return tuple((name, _version(name)) for name in names)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
