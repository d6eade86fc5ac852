"""The artifact store and serializers, run against every kind of store location.

Adding a new store backend? Add its URL to the ``store`` fixture's params.
"""

from __future__ import annotations

import collections
import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

from flowlib import serializers
from flowlib.errors import FlowError
from flowlib.store import (
    ArtifactRef,
    ArtifactStore,
    CorruptArtifact,
    InvalidDigest,
    InvalidRefName,
    parse_manifest,
)


class Point(NamedTuple):
    x: int
    y: float


@pytest.fixture(params=["folder", "file-url", "fsspec-local", "memory"])
def store(request, tmp_path: Path):
    if request.param == "folder":
        yield ArtifactStore(str(tmp_path / "artifacts"))
    elif request.param == "file-url":
        yield ArtifactStore(f"file://{tmp_path}/artifacts")
    elif request.param == "fsspec-local":
        # "local://" goes through fsspec, not the fast path: covers write-temp-then-mv.
        yield ArtifactStore(f"local://{tmp_path}/artifacts")
    else:
        import fsspec

        name = f"memory://flowtest-{uuid.uuid4().hex}"
        yield ArtifactStore(name)
        memory = fsspec.filesystem("memory")
        if memory.exists(name):
            memory.rm(name, recursive=True)


@pytest.fixture
def local(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def roundtrip(store: ArtifactStore, value):
    ref = store.put(value)
    return ref, store.get(ref)


# -- serializers ---------------------------------------------------------------


def test_tensor_roundtrip_is_bitwise(store):
    t = torch.randn(4, 5, dtype=torch.float64)
    ref, back = roundtrip(store, t)
    assert ref.serializer == "torch"
    assert back.dtype == t.dtype and torch.equal(back, t)
    half = torch.arange(7, dtype=torch.bfloat16)
    assert torch.equal(roundtrip(store, half)[1], half)


def test_state_dict_and_module_roundtrip(store):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    ref, sd = roundtrip(store, model.state_dict())
    assert ref.serializer == "torch"
    assert sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())

    ref, back = roundtrip(store, model)
    assert ref.serializer == "torch-pickle" and isinstance(back, torch.nn.Sequential)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_module_class_from_main_loads_in_another_process(local):
    script = (
        "import sys, torch\n"
        "from flowlib.store import ArtifactStore\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__(); self.fc = torch.nn.Linear(2, 2)\n"
        "import json; print(json.dumps(ArtifactStore(sys.argv[1]).put(Net()).to_json()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, local.url], capture_output=True, text=True, check=True
    )
    back = local.get(json.loads(out.stdout))
    assert type(back).__name__ == "Net" and back.fc.weight.shape == (2, 2)


def test_numpy_roundtrip_keeps_dtype(store):
    for arr in (np.arange(12, dtype=np.int16).reshape(3, 4), np.linspace(0, 1, 5, dtype=np.float32)):
        ref, back = roundtrip(store, arr)
        assert ref.serializer == "numpy"
        assert back.dtype == arr.dtype and np.array_equal(back, arr)
    ref, back = roundtrip(store, np.array([1, "a"], dtype=object))
    assert ref.serializer == "pickle" and list(back) == [1, "a"]


@pytest.mark.parametrize(
    "value",
    [None, True, 0, -(2**70), 1.0, -0.0, 1e-300, "héllo ✓", [], {}, [1, [2.5, "x"]], {"b": 1, "a": [None]}],
)
def test_json_values_roundtrip_exactly(store, value):
    ref, back = roundtrip(store, value)
    assert ref.serializer == "json"
    assert back == value and type(back) is type(value)
    if isinstance(value, dict):
        assert list(back) == list(value)


def test_float_stays_float_and_dict_order_is_kept(store):
    ref, back = roundtrip(store, {"z": 1.0, "a": 2})
    assert list(back) == ["z", "a"] and type(back["z"]) is float
    assert store.read_verified(ref.digest) == b'{"z":1.0,"a":2}'


@pytest.mark.parametrize(
    "value",
    [(1, 2), Point(1, 2.0), {1, 2}, {1: "int key"}, [(1, 2)], {"t": (1,)}, b"bytes", np.float64(1.5)],
)
def test_non_json_values_go_to_pickle_and_keep_their_type(store, value):
    ref, back = roundtrip(store, value)
    assert ref.serializer == "pickle"
    assert back == value and type(back) is type(value)


def test_nan_and_inf_go_to_pickle(store):
    ref, back = roundtrip(store, float("nan"))
    assert ref.serializer == "pickle" and math.isnan(back)
    ref, back = roundtrip(store, [1.0, float("inf")])
    assert ref.serializer == "pickle" and back == [1.0, float("inf")]


def test_unknown_serializer_is_a_flow_error():
    with pytest.raises(FlowError, match=r"unknown serializer 'nope'.*json"):
        serializers.get("nope")
    assert serializers.get("json").name == "json"


def test_importing_flowlib_store_loads_no_heavy_libraries():
    code = "import sys, flowlib.store; print(sorted({'torch','numpy','fsspec'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- store ---------------------------------------------------------------------


def test_digest_is_stable_and_the_file_is_the_format_alone(store):
    a = store.put({"k": [1, 2, 3]})
    b = store.put({"k": [1, 2, 3]})
    assert a == b and len(a.digest) == 64
    data = store.read_verified(a.digest)
    assert data == b'{"k":[1,2,3]}' and a.size == len(data) == store.size(a.digest)
    assert a.serializer == "json" and a.serializer_version == serializers.get("json").version
    assert ArtifactRef.from_json(a.to_json()) == a
    t = torch.ones(3)
    assert store.put(t).digest == store.put(t.clone()).digest


def test_put_bytes_and_exists(store):
    ref = store.put_bytes("json", serializers.get("json").version, b"[1]")
    assert store.exists(ref.digest) and store.verify(ref.digest)
    assert store.get(ref) == [1]
    assert not store.exists("0" * 64)


def test_corrupted_artifact_is_detected(local):
    ref = local.put(list(range(100)))
    path = local.path_for(ref.digest)
    data = bytearray(Path(path).read_bytes())
    data[-3] ^= 0x01
    Path(path).write_bytes(bytes(data))
    assert local.exists(ref.digest) and not local.verify(ref.digest)
    with pytest.raises(CorruptArtifact, match=f"{ref.digest} is corrupt") as err:
        local.get(ref)
    assert err.value.digest == ref.digest
    # Putting the value again repairs the damaged file.
    assert local.put(list(range(100))) == ref and local.verify(ref.digest)


def test_missing_artifact(store):
    digest = "ab" * 32
    assert not store.verify(digest)
    with pytest.raises(CorruptArtifact, match="missing") as err:
        store.get(ArtifactRef(digest, "json", serializers.get("json").version, 3))
    assert err.value.digest == digest
    with pytest.raises(CorruptArtifact, match="missing"):
        store.size(digest)


@pytest.mark.parametrize(
    "bad", ["../../etc/passwd", "ab/../..", "AB" * 32, "ab" * 31, "ab" * 33, "/" + "a" * 63, "", "g" * 64]
)
def test_invalid_digests_are_refused(store, bad):
    for call in (store.path_for, store.exists, store.verify, store.delete, store.read_verified):
        with pytest.raises(InvalidDigest):
            call(bad)
    with pytest.raises(InvalidDigest):
        store.get(ArtifactRef(bad, "json", serializers.get("json").version, 3))


def test_delete_and_iter_digests(store):
    refs = [store.put(v) for v in ("a", 1, np.zeros(2), (1,))]
    assert sorted(store.iter_digests()) == sorted(r.digest for r in refs)
    store.delete(refs[0].digest)
    store.delete(refs[0].digest)
    assert not store.exists(refs[0].digest)
    assert sorted(store.iter_digests()) == sorted(r.digest for r in refs[1:])


def test_no_temp_files_are_left(local):
    for v in range(20):
        local.put(v)
    local.put(torch.zeros(10))
    local.set_ref("ckpt/run1/train", local.put("x"))
    leftovers = [p for p in Path(local.url).rglob("*") if p.name.startswith(".tmp-")]
    assert leftovers == []


def test_refs(store):
    d1, d2 = store.put(1), store.put(2)
    assert store.get_ref("checkpoints/run-1/train.latest") is None
    store.set_ref("checkpoints/run-1/train.latest", d1)
    store.set_ref("checkpoints/run-1/train.latest", d2)
    store.set_ref("other", d1)
    assert store.get_ref("checkpoints/run-1/train.latest") == d2
    assert dict(store.iter_refs()) == {"checkpoints/run-1/train.latest": d2, "other": d1}
    assert dict(store.iter_refs("checkpoints")) == {"checkpoints/run-1/train.latest": d2}
    store.delete_ref("other")
    assert store.get_ref("other") is None
    with pytest.raises(InvalidDigest):
        store.set_ref("x", ArtifactRef("not-a-digest", "json", 2, 1))


@pytest.mark.parametrize(
    "bad", ["../x", "a/../../b", "/etc/passwd", "a//b", "", ".", "a/..", "a b", ".tmp-1", "a\\b"]
)
def test_bad_ref_names_are_refused(store, bad):
    ref = store.put(1)
    with pytest.raises(InvalidRefName):
        store.set_ref(bad, ref)
    with pytest.raises(InvalidRefName):
        store.get_ref(bad)


def test_put_list_and_manifest(store):
    values = [1, "two", (3,), torch.ones(2), {"five": 5.0}]
    manifest, elements = store.put_list(values)
    assert manifest.serializer == "manifest" and manifest.serializer_version == 2
    assert [e.serializer for e in elements] == ["json", "json", "pickle", "torch", "json"]
    assert store.manifest_elements(manifest) == elements
    assert json.loads(store.read_verified(manifest.digest))[0] == [
        elements[0].digest,
        "json",
        2,
        elements[0].size,
    ]
    back = store.get(manifest)
    assert back[:3] == values[:3] and torch.equal(back[3], values[3]) and back[4] == values[4]
    assert store.put_list([])[1] == [] and store.get(store.put_list([])[0]) == []
    with pytest.raises(FlowError, match="not a list manifest"):
        store.manifest_elements(elements[0])


def test_manifest_with_a_corrupt_element_fails(local):
    manifest, elements = local.put_list([10, 20])
    os.remove(local.path_for(elements[1].digest))
    assert local.manifest_elements(manifest) == elements
    with pytest.raises(CorruptArtifact, match=elements[1].digest):
        local.get(manifest)


@pytest.mark.parametrize("fsync", [False, True])
def test_put_list_of_many_values_keeps_order(tmp_path, fsync):
    store = ArtifactStore(str(tmp_path / "a"), fsync=fsync)
    values = [i % 300 for i in range(1_000)]
    manifest, elements = store.put_list(values)
    assert store.get(manifest) == values
    assert [store.get(e) for e in elements[:5]] == values[:5]
    assert len(set(store.iter_digests())) == 301


def test_artifact_written_by_another_store_object_is_readable(tmp_path):
    ref = ArtifactStore(str(tmp_path)).put(collections.OrderedDict(a=1))
    assert ArtifactStore(f"file://{tmp_path}").get(ref) == collections.OrderedDict(a=1)


def test_bytes_that_are_not_the_named_format_are_reported(local):
    import hashlib

    data = b"not json"
    digest = hashlib.sha256(data).hexdigest()
    Path(local.path_for(digest)).parent.mkdir(parents=True)
    Path(local.path_for(digest)).write_bytes(data)
    assert local.verify(digest)
    with pytest.raises(CorruptArtifact, match="not readable as json"):
        local.get(ArtifactRef(digest, "json", serializers.get("json").version, len(data)))


def test_artifact_files_open_with_their_formats_own_loaders(local):
    """numpy.load, torch.load, json.load and pickle.load open the files as their own."""
    import pickle

    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(np.load(local.path_for(local.put(array).digest)), array)
    tensor = torch.randn(3)
    assert torch.equal(torch.load(local.path_for(local.put(tensor).digest), weights_only=True), tensor)
    with open(local.path_for(local.put({"a": [1, 2]}).digest)) as file:
        assert json.load(file) == {"a": [1, 2]}
    with open(local.path_for(local.put(Point(1, 2.0)).digest), "rb") as file:
        assert pickle.load(file) == Point(1, 2.0)


def test_a_serializer_of_another_version_is_refused(store):
    ref = store.put([1])
    old = ArtifactRef(ref.digest, ref.serializer, ref.serializer_version - 1, ref.size)
    with pytest.raises(FlowError, match="version"):
        store.get(old)


def test_a_large_tensor_streams_is_memory_mapped_and_verified(tmp_path):
    """A tensor above STREAM_MIN is written hashed-as-it-goes and read back verified (and mmapped)."""
    import torch

    from flowlib.store import STREAM_MIN, ArtifactStore, CorruptArtifact

    store = ArtifactStore(str(tmp_path / "s"), fsync=True)
    tensor = torch.randn(STREAM_MIN // 4 + 1000)
    ref = store.put(tensor)
    assert store.is_large(ref.digest)
    assert ref.size == (tmp_path / "s" / "objects" / ref.digest[:2] / ref.digest).stat().st_size
    loaded = store.get(ref)
    assert torch.equal(loaded, tensor) and loaded.dtype == tensor.dtype
    assert torch.equal(store.decode(ref, store.read_verified(ref.digest)), tensor)
    assert ref.digest == store.put(tensor).digest  # deterministic bytes, same digest
    path = tmp_path / "s" / "objects" / ref.digest[:2] / ref.digest
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifact):
        store.get(ref)


GOOD_DIGEST = "ab" * 32


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b"{}",
        b"3",
        b'"' + GOOD_DIGEST.encode() + b'"',
        b"[null]",
        b"[[1, 2, 3]]",
        b'[["' + GOOD_DIGEST.encode() + b'", "json", 1, 1, 5]]',
        b'[["ab", "json", 1, 1]]',
        b'[["' + b"g" * 64 + b'", "json", 1, 1]]',
        b'[["' + GOOD_DIGEST.upper().encode() + b'", "json", 1, 1]]',
        b'[["' + GOOD_DIGEST.encode() + b'", 3, 1, 1]]',
        b'[["' + GOOD_DIGEST.encode() + b'", "json", 1, true]]',
        b'[["' + GOOD_DIGEST.encode() + b'", "json", "1", 1]]',
        b'[["' + GOOD_DIGEST.encode() + b'", "json", 1, 1], "x"]',
        b'[{"digest": "' + GOOD_DIGEST.encode() + b'", "serializer": "json", "v": 1, "size": 1}]',
    ],
)
def test_a_malformed_manifest_is_corrupt_never_a_list_of_wrong_refs(payload: bytes) -> None:
    with pytest.raises(CorruptArtifact, match="malformed manifest"):
        parse_manifest("0" * 64, payload)


def test_a_manifest_lists_its_elements_in_order() -> None:
    other = "cd" * 32
    payload = json.dumps([[GOOD_DIGEST, "json", 1, 3], [other, "pickle", 2, 70000]]).encode()
    assert parse_manifest("0" * 64, payload) == [
        ArtifactRef(GOOD_DIGEST, "json", 1, 3),
        ArtifactRef(other, "pickle", 2, 70000),
    ]
    assert parse_manifest("0" * 64, b"[]") == []
