"""Serializers chosen by value type: torch, numpy, json, then cloudpickle for the rest.

Each serializer has a ``name`` and ``version``, recorded beside every artifact's digest
(an ArtifactRef, and the run database), so a cache entry written by another serializer
version can be told apart. An artifact file is the serializer's own format alone. numpy and torch
are never imported here: a value can only be a tensor or an array if its library is
already in ``sys.modules``, so that is where the classes are looked up.
"""

from __future__ import annotations

import io
import json
import math
import sys
from collections import OrderedDict
from typing import Any

from flowlib.errors import FlowError

__all__ = ["Serializer", "choose", "get", "registry"]

# Python refuses to parse ints longer than 4300 digits by default, so bigger ones
# would not come back from JSON.
_JSON_INT_LIMIT = 10**4000


class Serializer:
    """Turn values of the types it accepts into bytes and back."""

    name: str = ""
    version: int = 2  # 2: files hold the serializer's own format alone (no flowlib header)

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError

    # Large values stream: written through a file object (hashed as it goes) and read back
    # from the file by path, so a 1 GiB tensor is never held twice in memory.
    def size_hint(self, value: Any) -> int | None:
        """The rough serialized size when it is cheap to know (tensors, arrays), else None."""
        return None

    def dump(self, value: Any, file: Any) -> None:
        file.write(self.dumps(value))

    def load_path(self, path: str) -> Any:
        with open(path, "rb") as file:
            return self.loads(file.read())

    def __repr__(self) -> str:
        return f"<Serializer {self.name} v{self.version}>"


def _torch_if_loaded() -> Any:
    return sys.modules.get("torch")


def _is_state_dict(torch: Any, value: Any) -> bool:
    return (
        type(value) in (dict, OrderedDict)
        and len(value) > 0
        and all(isinstance(k, str) for k in value)
        and all(isinstance(v, torch.Tensor) for v in value.values())
    )


class TorchSerializer(Serializer):
    """Plain tensors and state dicts via ``torch.save``, loaded with ``weights_only=True``
    (no arbitrary code runs on load)."""

    name = "torch"
    weights_only = True

    def accepts(self, value: Any) -> bool:
        torch = _torch_if_loaded()
        if torch is None:
            return False
        # Tensor subclasses other than Parameter are not on weights_only's allow-list.
        plain = (torch.Tensor, torch.nn.Parameter)
        if isinstance(value, torch.Tensor):
            return type(value) in plain
        return _is_state_dict(torch, value) and all(type(v) in plain for v in value.values())

    def dumps(self, value: Any) -> bytes:
        buf = io.BytesIO()
        self.dump(value, buf)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        import torch

        return torch.load(io.BytesIO(data), weights_only=self.weights_only, map_location="cpu")

    def size_hint(self, value: Any) -> int | None:
        import torch

        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if _is_state_dict(torch, value):
            return sum(v.element_size() * v.nelement() for v in value.values())
        return None

    def dump(self, value: Any, file: Any) -> None:
        import torch

        torch.save(value, file)

    def load_path(self, path: str) -> Any:
        import torch

        return torch.load(path, weights_only=self.weights_only, map_location="cpu", mmap=True)


class TorchObjectSerializer(TorchSerializer):
    """``nn.Module`` objects, tensor subclasses and other torch values: ``torch.save`` with
    cloudpickle, so a module class defined in a pipeline file (often ``__main__``) loads in a
    worker that never imported it; loading it runs pickle's code."""

    name = "torch-pickle"
    weights_only = False

    def accepts(self, value: Any) -> bool:
        torch = _torch_if_loaded()
        if torch is None:
            return False
        return isinstance(value, (torch.Tensor, torch.nn.Module)) or _is_state_dict(torch, value)

    def dump(self, value: Any, file: Any) -> None:
        import cloudpickle
        import torch

        torch.save(value, file, pickle_module=cloudpickle)


class NumpySerializer(Serializer):
    """Plain ``numpy.ndarray`` values without Python objects inside, as ``.npy``."""

    name = "numpy"

    def accepts(self, value: Any) -> bool:
        np = sys.modules.get("numpy")
        # Exact type: subclasses (masked arrays, matrix) would lose their extra state.
        return np is not None and type(value) is np.ndarray and not value.dtype.hasobject

    def dumps(self, value: Any) -> bytes:
        import numpy as np

        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)

    def size_hint(self, value: Any) -> int | None:
        return int(value.nbytes)

    def dump(self, value: Any, file: Any) -> None:
        import numpy as np

        np.save(file, value, allow_pickle=False)

    def load_path(self, path: str) -> Any:
        import numpy as np

        return np.load(path, allow_pickle=False)


def _json_exact(value: Any) -> bool:
    """Whether ``value`` comes back from JSON as an equal value of the same types."""
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return True
    if kind is int:
        return -_JSON_INT_LIMIT < value < _JSON_INT_LIMIT
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(_json_exact(v) for v in value)
    if kind is dict:
        return all(type(k) is str and _json_exact(v) for k, v in value.items())
    return False


class JsonSerializer(Serializer):
    """Values that round-trip exactly through strict JSON, dict order kept."""

    name = "json"

    def accepts(self, value: Any) -> bool:
        try:
            return _json_exact(value)
        except RecursionError:
            return False

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data.decode())


class PickleSerializer(Serializer):
    """Anything else, with cloudpickle (functions and classes from ``__main__`` included)."""

    name = "pickle"

    def accepts(self, value: Any) -> bool:
        return True

    def dumps(self, value: Any) -> bytes:
        import cloudpickle

        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


registry: dict[str, Serializer] = {
    s.name: s
    for s in (
        TorchSerializer(),
        TorchObjectSerializer(),
        NumpySerializer(),
        JsonSerializer(),
        PickleSerializer(),
    )
}


def choose(value: Any) -> Serializer:
    """Return the first registered serializer that accepts ``value`` (pickle accepts all)."""
    for serializer in registry.values():
        if serializer.accepts(value):
            return serializer
    return registry["pickle"]


def get(name: str) -> Serializer:
    """Return the serializer called ``name``; an unknown name is a FlowError listing the known ones."""
    try:
        return registry[name]
    except KeyError:
        known = ", ".join(sorted(registry))
        raise FlowError(f"unknown serializer {name!r} (known: {known})") from None
