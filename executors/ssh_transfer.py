"""Moving code and artifacts between this machine and an `ssh` host's workdir over SFTP.

The project's .py files go to `code/<content hash>/` once per host; input artifacts
the host lacks go to its `artifacts/` store, and outputs (and a newer checkpoint)
come back into the local store. Every remote file lands by an atomic rename.
With a shared (non-local fsspec) artifact store only the code is shipped.

Node k of a multi-node attempt keeps its checkpoint ref on the host as `<ref>.node<k>`,
so hosts that share one workdir filesystem never write each other's.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import secrets
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

import asyncssh

from executors.base import TaskResult, TaskSpec, input_refs
from flowlib.store import MANIFEST, ArtifactRef, ArtifactStore, parse_manifest

CODE_MAX_FILES, CODE_MAX_BYTES = 5000, 32 << 20
MARKER = ".flowlib-workdir"
SKIP_DIRS = {"__pycache__", "node_modules", "site-packages", "venv", "build", "dist"}


class ShipError(Exception):
    """Code or artifacts could not be moved between this machine and a host."""


class Remote(Protocol):
    """What shipping needs of a connected host."""

    sftp: Any
    workdir: str
    have: set[str]  # keys of files known to be on the host


def _shared_store(url: str) -> bool:
    return "://" in url and not url.startswith(("file://", "memory://"))


def _input_refs(spec: TaskSpec) -> list[tuple[ArtifactRef, Mapping[str, bytes]]]:
    """(artifact, the input's inline bytes by digest) for every artifact input of `spec`."""
    found = []
    for value in spec.inputs.values():
        inline = value.get("inline") or {}
        found.extend((ArtifactRef.from_json(ref), inline) for ref in input_refs(value))
    return found


def remote_ref(ref: str, node: int | None) -> str:
    """The name of a checkpoint ref on a host: per node for a multi-node attempt."""
    return ref if node is None else f"{ref}.node{node}"


def _project_files(spec: TaskSpec) -> tuple[str | None, list[tuple[str, bytes]]]:
    """Return (code root, [(relative path, bytes)]) of the .py files a remote attempt needs."""
    op_file = os.path.abspath(spec.operator.file)
    root = os.path.abspath(spec.project_root) if spec.project_root else None
    if root is None or not op_file.startswith(root + os.sep):
        root = os.path.dirname(op_file) if os.path.isfile(op_file) else root
    if root is None or not os.path.isdir(root):
        return None, []
    files, total = [], 0
    for folder, dirs, names in os.walk(root):
        # A host's workdir may sit inside the project when the host is this machine: never ship it.
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".")
            and d not in SKIP_DIRS
            and not os.path.exists(os.path.join(folder, d, MARKER))
        )
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.endswith(".py") or path == op_file:
                with open(path, "rb") as f:
                    data = f.read()
                total += len(data)
                files.append((os.path.relpath(path, root).replace(os.sep, "/"), data))
        if len(files) > CODE_MAX_FILES or total > CODE_MAX_BYTES:
            raise ShipError(
                f"the project at {root} holds more than {CODE_MAX_FILES} .py files or "
                f"{CODE_MAX_BYTES >> 20} MiB of them, too much to ship to ssh hosts"
            )
    return root, files


async def _blocking(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def _put(host: Remote, path: str, data: bytes) -> None:
    """Write a remote file under a temporary name and rename it into place."""
    folder = posixpath.dirname(path)
    if "dir:" + folder not in host.have:
        await host.sftp.makedirs(folder, exist_ok=True)
        host.have.add("dir:" + folder)
    tmp = f"{folder}/.tmp-{secrets.token_hex(8)}"
    async with host.sftp.open(tmp, "wb") as f:
        await f.write(data)
    await host.sftp.posix_rename(tmp, path)


class Transfer:
    """Ship code and inputs to hosts and fetch outputs back, caching local stores and code walks."""

    def __init__(self) -> None:
        self._stores: dict[tuple[str, bool], ArtifactStore] = {}
        self._code: dict[tuple[str, str], tuple[str | None, list[tuple[str, bytes]], str]] = {}

    def _store(self, spec: TaskSpec) -> ArtifactStore:
        key = (spec.store_url, spec.fsync)
        if key not in self._stores:
            self._stores[key] = ArtifactStore(spec.store_url, fsync=spec.fsync)
        return self._stores[key]

    async def local_ref(self, spec: TaskSpec) -> ArtifactRef | None:
        """What the spec's checkpoint ref points at in the local store now."""
        if not spec.checkpoint_ref or _shared_store(spec.store_url):
            return None
        return await _blocking(self._store(spec).get_ref, spec.checkpoint_ref)

    async def ship(self, host: Remote, spec: TaskSpec, node: int | None = None) -> tuple[TaskSpec, list[str]]:
        """Put the code and inputs on the host; return the spec as the host sees it and its sys.path.

        `node`: the node's index in a multi-node attempt (its checkpoint ref is its own there)."""
        key = (spec.project_root, spec.operator.file)
        if key not in self._code:
            root, files = await _blocking(_project_files, spec)
            h = hashlib.sha256()
            for rel, data in files:
                h.update(b"%d:%s%d:" % (len(rel.encode()), rel.encode(), len(data)) + data)
            digest = h.hexdigest()[:24]
            self._code[key] = (root, files, digest)
        root, files, digest = self._code[key]
        code_dir = f"{host.workdir}/code/{digest}"

        # Concurrent first attempts may both upload: harmless, every file lands by an atomic rename.
        if digest not in host.have and not await host.sftp.exists(f"{code_dir}/.complete"):
            await asyncio.gather(*(_put(host, f"{code_dir}/{rel}", data) for rel, data in files))
            await _put(host, f"{code_dir}/.complete", b"")
        host.have.add(digest)
        operator, sys_path = spec.operator, [code_dir] if root else []
        if root and os.path.abspath(operator.file).startswith(root + os.sep):
            remote_file = posixpath.join(code_dir, os.path.relpath(os.path.abspath(operator.file), root))
            operator = replace(operator, file=remote_file.replace(os.sep, "/"))
        if _shared_store(spec.store_url):
            return replace(spec, operator=operator, project_root=code_dir if root else ""), sys_path
        store, remote_store = self._store(spec), f"{host.workdir}/artifacts"
        ref = await _blocking(store.get_ref, spec.checkpoint_ref) if spec.checkpoint_ref else None
        wanted = [*_input_refs(spec), *([(ref, {})] if ref else [])]
        await asyncio.gather(
            *(self._send_artifact(host, store, artifact, inline) for artifact, inline in wanted)
        )
        name = remote_ref(spec.checkpoint_ref, node) if spec.checkpoint_ref else None
        if ref and name:
            await _put(host, f"{remote_store}/refs/{name}", _ref_bytes(ref))
        elif name and node is not None:  # one an earlier attempt left there would read as this one's
            try:
                await host.sftp.remove(f"{remote_store}/refs/{name}")
            except asyncssh.SFTPNoSuchFile:
                pass
        remote = replace(
            spec,
            operator=operator,
            store_url=remote_store,
            project_root=code_dir if root else "",
            checkpoint_ref=name,
        )
        return remote, sys_path

    async def _send_artifact(
        self, host: Remote, store: ArtifactStore, ref: ArtifactRef, inline: Mapping[str, bytes]
    ) -> None:
        """Copy an artifact (and a list's elements) unless the host has it or it travels inline."""
        digest = ref.digest
        if digest in host.have:
            return  # there with all its elements
        data = inline.get(digest)
        if data is None:
            data = await _blocking(store.read_verified, digest)
            path = f"{host.workdir}/artifacts/objects/{digest[:2]}/{digest}"
            if not await host.sftp.exists(path):
                await _put(host, path, data)
        if ref.serializer == MANIFEST:
            elements = parse_manifest(digest, data)
            await asyncio.gather(*(self._send_artifact(host, store, e, inline) for e in elements))
        if digest not in inline:
            host.have.add(digest)

    async def fetch(
        self,
        host: Remote,
        spec: TaskSpec,
        result: TaskResult | None,
        node: int | None = None,
        since: str | None = None,
    ) -> None:
        """Bring outputs (and a newer checkpoint) back into the local store.

        For node `node` of a multi-node attempt, its checkpoint counts as newer when it is not
        `since` (what the ref pointed at when the attempt started), and `result` may be None."""
        if _shared_store(spec.store_url):
            return
        store, remote_store = self._store(spec), f"{host.workdir}/artifacts"
        outputs = result.outputs.values() if result is not None else ()
        wanted = [
            digest
            for out in outputs
            for digest in [out["digest"], *(e["digest"] for e in out.get("elements", []))]
            if digest not in (out.get("inline") or {})
        ]
        ref: ArtifactRef | None = None
        if spec.checkpoint_ref:
            try:
                name = remote_ref(spec.checkpoint_ref, node)
                async with host.sftp.open(f"{remote_store}/refs/{name}", "rb") as f:
                    ref = ArtifactRef.from_json(json.loads(await f.read()))
            except (asyncssh.SFTPNoSuchFile, ValueError, KeyError):
                ref = None
            before = since if node is not None else await _blocking(store.get_ref, spec.checkpoint_ref)
            if ref is not None and (before is None or ref.digest != before.digest):
                wanted.append(ref.digest)
            else:
                ref = None
        await asyncio.gather(*(self._fetch_artifact(host, store, d) for d in wanted))
        if ref:
            await _blocking(store.set_ref, spec.checkpoint_ref, ref)

    async def _fetch_artifact(self, host: Remote, store: ArtifactStore, digest: str) -> None:
        if await _blocking(store.exists, digest):
            return
        async with host.sftp.open(f"{host.workdir}/artifacts/objects/{digest[:2]}/{digest}", "rb") as f:
            data: bytes = await f.read()
        if hashlib.sha256(data).hexdigest() != digest:
            raise ShipError(f"artifact {digest} fetched from the host is corrupt")
        # content-addressed: the bytes are the artifact whatever wrote them (its ref says which serializer)
        await _blocking(store.write, ArtifactRef(digest, "", 0, len(data)), data)
        host.have.add(digest)


def _ref_bytes(ref: ArtifactRef) -> bytes:
    """A ref file's bytes, as ArtifactStore.set_ref writes them."""
    return json.dumps(ref.to_json(), separators=(",", ":")).encode() + b"\n"
