"""Serializers chosen by value type: torch, numpy, json, then cloudpickle for the rest.

Each serializer has a ``name`` and ``version`` that the artifact header records, so a
cache entry written by another serializer version can be told apart. numpy and torch
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
    version: int = 1

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def dumps(self, value: Any) -> bytes:
        raise NotImplementedError

    def loads(self, data: bytes) -> Any:
        raise NotImplementedError

    # Large values stream: written through a file object (hashed as it goes) and read back
    # from one, so a 1 GiB tensor is never held twice in memory.
    def size_hint(self, value: Any) -> int | None:
        """The rough serialized size when it is cheap to know (tensors, arrays), else None."""
        return None

    def dump(self, value: Any, file: Any) -> None:
        file.write(self.dumps(value))

    def load(self, file: Any) -> Any:
        return self.loads(file.read())

    def dump_payload_first(self, value: Any, file: Any) -> bytes | None:
        """Write the payload so the file can be loaded by path; return the lead bytes, or None."""
        return None

    def load_path(self, path: str, lead: bytes) -> Any:
        with open(path, "rb") as file:
            return self.loads(lead + file.read())

    def __repr__(self) -> str:
        return f"<Serializer {self.name} v{self.version}>"


def _torch_if_loaded() -> Any:
    return sys.modules.get("torch")


class TorchSerializer(Serializer):
    """Tensors, state dicts (dicts of tensors) and ``nn.Module`` objects via ``torch.save``."""

    name = "torch"
    version = 1

    # The first payload byte says how to load the rest: tensors and state dicts load
    # with weights_only=True (no arbitrary code runs); a Module needs a full unpickle.
    _WEIGHTS = b"W"
    _FULL = b"F"

    def accepts(self, value: Any) -> bool:
        torch = _torch_if_loaded()
        if torch is None:
            return False
        if isinstance(value, (torch.Tensor, torch.nn.Module)):
            return True
        return self._is_state_dict(torch, value)

    @staticmethod
    def _is_state_dict(torch: Any, value: Any) -> bool:
        return (
            type(value) in (dict, OrderedDict)
            and len(value) > 0
            and all(isinstance(k, str) for k in value)
            and all(isinstance(v, torch.Tensor) for v in value.values())
        )

    def _weights_only_safe(self, torch: Any, value: Any) -> bool:
        # Tensor subclasses other than Parameter are not on weights_only's allow-list.
        plain = (torch.Tensor, torch.nn.Parameter)
        if isinstance(value, torch.Tensor):
            return type(value) in plain
        return self._is_state_dict(torch, value) and all(type(v) in plain for v in value.values())

    def dumps(self, value: Any) -> bytes:
        # cloudpickle for a Module, so its class defined in a pipeline file (often
        # __main__) can be loaded in a worker that never imported that file.
        buf = io.BytesIO()
        self.dump(value, buf)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        return self.load(io.BytesIO(data))

    def size_hint(self, value: Any) -> int | None:
        import torch

        if isinstance(value, torch.Tensor):
            return value.element_size() * value.nelement()
        if self._is_state_dict(torch, value):
            return sum(v.element_size() * v.nelement() for v in value.values())
        return None

    def dump(self, value: Any, file: Any) -> None:
        self._write_mode_and_save(value, file, file)

    def _write_mode_and_save(self, value: Any, file: Any, mode_to: Any) -> None:
        import torch

        if self._weights_only_safe(torch, value):
            mode_to.write(self._WEIGHTS)
            torch.save(value, file)
        else:
            import cloudpickle

            mode_to.write(self._FULL)
            torch.save(value, file, pickle_module=cloudpickle)

    def dump_payload_first(self, value: Any, file: Any) -> bytes | None:
        # The torch file at offset 0 (a trailer after its zip is ignored by torch), so
        # `load_path` can memory-map it; the mode byte moves to the trailer.
        mode = io.BytesIO()
        self._write_mode_and_save(value, file, mode)
        return mode.getvalue()

    def load_path(self, path: str, lead: bytes) -> Any:
        import torch

        if lead not in (self._WEIGHTS, self._FULL):
            raise FlowError(f"torch artifact has unknown load mode {lead!r}")
        return torch.load(path, weights_only=lead == self._WEIGHTS, map_location="cpu", mmap=True)

    def load(self, file: Any) -> Any:
        import torch

        mode = file.read(1)  # torch reads its zip from the file's current position on
        if mode == self._WEIGHTS:
            return torch.load(file, weights_only=True, map_location="cpu")
        if mode == self._FULL:
            return torch.load(file, weights_only=False, map_location="cpu")
        raise FlowError(f"torch artifact has unknown load mode {mode!r}")


class NumpySerializer(Serializer):
    """Plain ``numpy.ndarray`` values without Python objects inside, as ``.npy``."""

    name = "numpy"
    version = 1

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
        return self.load(io.BytesIO(data))

    def size_hint(self, value: Any) -> int | None:
        return int(value.nbytes)

    def dump(self, value: Any, file: Any) -> None:
        import numpy as np

        np.save(file, value, allow_pickle=False)

    def load(self, file: Any) -> Any:
        import numpy as np

        return np.load(file, allow_pickle=False)


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
    version = 1

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
    version = 1

    def accepts(self, value: Any) -> bool:
        return True

    def dumps(self, value: Any) -> bytes:
        import cloudpickle

        return cloudpickle.dumps(value)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)


registry: dict[str, Serializer] = {
    s.name: s for s in (TorchSerializer(), NumpySerializer(), JsonSerializer(), PickleSerializer())
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
