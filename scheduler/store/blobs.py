"""Small artifacts kept in the database (see flowlib.artifacts): recent ones cached in memory."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine

from flowlib.artifacts import Reader
from scheduler.store.models import artifacts
from scheduler.store.outage import Outage
from scheduler.store.repository import chunks

MEMORY_LIMIT = 256 * 1024 * 1024


class Blobs:
    """Bytes of inline artifacts by digest: memory first (bounded), then the `artifacts` table."""

    def __init__(
        self, engine: Engine | None = None, memory_limit: int = MEMORY_LIMIT, outage: Outage | None = None
    ) -> None:
        self.engine = engine
        self.outage = outage  # a scheduler's reads wait out a short database outage
        self.memory_limit = memory_limit
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0

    def remember(self, blobs: dict[str, bytes]) -> None:
        """Keep verified bytes in memory (newest win: a recomputed artifact replaces a damaged one)."""
        for digest, data in blobs.items():
            old = self._memory.pop(digest, None)
            self._size += len(data) - (len(old) if old is not None else 0)
            self._memory[digest] = data
        self.shrink(self.memory_limit)

    def shrink(self, limit: int) -> None:
        """Forget the oldest bytes until at most `limit` remain (and keep to that limit)."""
        self.memory_limit = limit
        while self._size > self.memory_limit and self._memory:
            _, dropped = self._memory.popitem(last=False)
            self._size -= len(dropped)

    def get_many(self, digests: Iterable[str]) -> dict[str, bytes]:
        """Verified bytes of those digests that are stored inline (memory or database).

        A row whose bytes do not hash to its digest is left out, as if missing.
        """
        found: dict[str, bytes] = {}
        missing = []
        for digest in digests:
            data = self._memory.get(digest)
            if data is None:
                missing.append(digest)
            else:
                found[digest] = data
        if missing:
            loaded = self.outage.ride(lambda: self._load(missing)) if self.outage else self._load(missing)
            self.remember(loaded)
            found.update(loaded)
        return found

    def _load(self, digests: list[str]) -> dict[str, bytes]:
        """Straight through the driver: a map's cached rerun loads a hundred thousand of them,
        and SQLAlchemy's per-row work would be most of the time."""
        loaded = {}
        sha256 = hashlib.sha256
        with self.engine.connect() as conn:
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            cursor = conn.connection.cursor()
            try:
                # in index order: each lookup reads the pages the one before it read
                for chunk in chunks(sorted(digests)):
                    places = ",".join([mark] * len(chunk))
                    cursor.execute(
                        f"SELECT digest, data FROM {artifacts.name} WHERE digest IN ({places}) AND data IS NOT NULL",
                        tuple(chunk),
                    )
                    for digest, data in cursor.fetchall():
                        if sha256(data).hexdigest() == digest:
                            loaded[digest] = bytes(data)
            finally:
                cursor.close()
        return loaded

    def get(self, digest: str, default: Any = None) -> bytes | None:
        return self.get_many([digest]).get(digest, default)

    def intact(self, digest: str) -> bool:
        return digest in self._memory or self.get(digest) is not None

    def reader(self, store: Any) -> Reader:
        """A Reader that finds inline artifacts here and the rest in `store`."""
        return Reader(store, self)


def inline_digests(ref: dict[str, Any]) -> list[str]:
    """The digests of one output ref that live in the database rather than the store."""
    return list(ref.get("inline") or ())
