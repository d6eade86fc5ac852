"""Read model of the node page: attempts, the log (and where following it starts), inputs and
outputs with digests and short previews, checkpoints, a map's items."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, case, func, select

from flowlib.store import MANIFEST
from scheduler.store import repository as repo
from scheduler.store.models import artifacts, checkpoints, log_chunks, nodes

PREVIEW_BYTES = 64 * 1024
PREVIEW_CHARS = 300
# values a preview may load: data formats only (a pickle could need, and run, the user's code)
SAFE = {"json", "numpy"}
ITEMS_SHOWN = 200


@dataclass
class Value:
    name: str
    digest: str | None
    serializer: str | None
    size: int | None
    preview: str


def preview(reader: Any, ref: dict[str, Any]) -> str:
    """A short text of a stored value, when it is small and of a data format; else why not."""
    serializer, size = ref.get("serializer"), int(ref.get("size") or 0)
    if size > PREVIEW_BYTES:
        return f"({size:,} bytes: too large to preview)"
    try:
        if serializer == MANIFEST:
            elements = reader.elements(ref)
            if (
                any(e.serializer not in SAFE for e in elements)
                or sum(e.size for e in elements) > PREVIEW_BYTES
            ):
                return f"(a list of {len(elements)} stored elements)"
        elif serializer not in SAFE:
            return f"({serializer}: open it with `flow outputs`)"
        value = reader.get(ref)
    except Exception as exc:
        return f"(cannot load it: {type(exc).__name__})"
    text = repr(value) if type(value).__module__ == "numpy" else json.dumps(value, default=repr)
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def outputs(reader: Any, node: Row) -> list[Value]:
    return [
        Value(name, ref.get("digest"), ref.get("serializer"), ref.get("size"), preview(reader, ref))
        for name, ref in (node.outputs or {}).items()
    ]


def inputs(conn: Connection, reader: Any, node: Row, literals: dict[str, Any]) -> list[Value]:
    """Each input's digest; its value from the store when it is an artifact, else the literal the
    plan holds for it."""
    digests = {param: d for param, d in (node.inputs or {}).items() if isinstance(d, str)}
    known = {}
    for chunk in repo.chunks(sorted(set(digests.values()))):
        query = select(
            artifacts.c.digest, artifacts.c.serializer, artifacts.c.serializer_version, artifacts.c.size
        )
        for row in conn.execute(query.where(artifacts.c.digest.in_(chunk))):
            known[row.digest] = dict(row._mapping)
    shown = []
    for param, digest in sorted(digests.items()):
        ref = known.get(digest)
        if ref is not None:
            shown.append(Value(param, digest, ref["serializer"], ref["size"], preview(reader, ref)))
        elif param in literals:
            text = json.dumps(literals[param], default=repr)
            shown.append(Value(param, digest, "literal", None, text[:PREVIEW_CHARS]))
        else:
            shown.append(Value(param, digest, None, None, ""))
    return shown


def plan_literals(conn: Connection, run: Row, name: str) -> dict[str, Any]:
    """The literal inputs the run's plan gives node `name` (JSON values only)."""
    if not getattr(run, "plan_digest", None):
        return {}
    text = repo.load_plan_text(conn, run.plan_digest)
    if text is None:
        return {}
    base = name.rsplit("[", 1)[0] if name.endswith("]") else name
    for node in json.loads(text).get("nodes", []):
        if node["name"] in (name, base):
            found = {
                p: v["lit"] for p, v in node.get("inputs", {}).items() if isinstance(v, dict) and "lit" in v
            }
            if node["name"] == base != name and node.get("items") and node.get("map_param"):
                item = node["items"][int(name[len(base) + 1 : -1])]
                if isinstance(item, dict) and "lit" in item:
                    found[node["map_param"]] = item["lit"]
            return found
    return {}


def log_cursor(conn: Connection, run_id: str, node: str) -> int:
    """The last streamed log chunk of the node: following its log starts after it."""
    query = select(func.max(log_chunks.c.id)).where(log_chunks.c.run_id == run_id, log_chunks.c.node == node)
    return int(conn.scalar(query) or 0)


def chunks_after(conn: Connection, run_id: str, node: str, after: int) -> list[Row]:
    c = log_chunks.c
    query = select(c.id, c.attempt, c.text).where(c.run_id == run_id, c.node == node, c.id > after)
    return list(conn.execute(query.order_by(c.id).limit(2000)))


def node_checkpoints(conn: Connection, run: Row, node: str) -> list[Row]:
    """The node's checkpoints in its resume chain (they are kept per root run)."""
    c = checkpoints.c
    query = select(checkpoints).where(c.root_run_id == (run.root_run_id or run.id), c.node == node)
    return list(conn.execute(query.order_by(c.id).limit(500)))


def items(conn: Connection, run_id: str, name: str) -> list[Row]:
    """A map's items, those that went wrong first."""
    c = nodes.c
    wrong = case((c.status.in_(("failed", "upstream_failed", "cancelled")), 0), else_=1)
    query = (
        select(c.name, c.status, c.attempts, c.duration_s, c.cached, c.error)
        .where(c.run_id == run_id, c.map_parent == name)
        .order_by(wrong, c.position, c.id)
        .limit(ITEMS_SHOWN)
    )
    return list(conn.execute(query))
