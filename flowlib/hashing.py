"""Content hashing: canonical value encodings and node cache keys.

Every hash is sha256 over the type- and length-prefixed encoding of a labelled list
(``["node", fingerprint, ["inputs", ...]]``), so two kinds of object can never collide.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import pathlib
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flowlib.errors import WorkflowDefinitionError

if TYPE_CHECKING:
    from flowlib.fingerprint import Fingerprint as Fingerprint
    from flowlib.fingerprint import diff_fingerprints as diff_fingerprints
    from flowlib.fingerprint import find_project_root as find_project_root
    from flowlib.fingerprint import normalize_source as normalize_source
    from flowlib.fingerprint import operator_fingerprint as operator_fingerprint


class UnhashableLiteral(WorkflowDefinitionError):
    """A literal has no canonical encoding, so it cannot be part of a cache key.

    Built from the value's type, or from a message that adds context (operator, parameter) to one.
    """

    def __init__(self, what: type | str) -> None:
        self.value_type = what if isinstance(what, type) else None
        if isinstance(what, type):
            what = (
                f"cannot hash a literal of type {_type_name(what)}: define `__flow_hash__(self) -> bytes` "
                "on the class, or pass the value through an operator so that it becomes an artifact"
            )
        super().__init__(what)


def _type_name(cls: type) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


# Canonical encoding ----------------------------------------------------------------------------------


def _frame(tag: bytes, payload: bytes) -> bytes:
    return b"%s:%d:%s" % (tag, len(payload), payload)


@functools.singledispatch
def encode(value: object) -> bytes:
    """Return the canonical bytes of a literal; raise UnhashableLiteral when it has none.

    Each encoding starts with its kind and length, so it is self-delimiting and two kinds never
    share bytes. Add a type with ``@encode.register``.
    """
    return _encode_other(value)


# Exactly these types: a subclass (IntEnum, a NamedTuple, np.float64) says more than its base does.
_PLAIN: dict[type, Callable[[Any], bytes]] = {
    int: lambda v: _frame(b"int", b"%d" % v),
    float: lambda v: _frame(b"float", v.hex().encode()),  # exact, and 1.0 is not 1
    str: lambda v: _frame(b"str", v.encode("utf-8", "surrogatepass")),
    bytes: lambda v: _frame(b"bytes", v),
    bytearray: lambda v: _frame(b"bytearray", bytes(v)),
    tuple: lambda v: _frame(b"tuple", _joined(v)),
    list: lambda v: _frame(b"list", _joined(v)),
    set: lambda v: _frame(b"set", b"".join(sorted(map(encode, v)))),
    frozenset: lambda v: _frame(b"frozenset", b"".join(sorted(map(encode, v)))),
    dict: lambda v: _frame(
        b"dict", b"".join(k + x for k, x in sorted((encode(k), encode(x)) for k, x in v.items()))
    ),
}


def _joined(values: list[Any] | tuple[Any, ...]) -> bytes:
    """The items' encodings, one after the other; all plain strs (a map's item digests) without
    a dispatch each."""
    if all(type(value) is str for value in values):
        return b"".join([_str(value) for value in values])
    return b"".join(map(encode, values))


def _register_plain(cls: type, encoder: Callable[[Any], bytes]) -> None:
    encode.register(cls, lambda value: encoder(value) if type(value) is cls else _encode_other(value))


for _cls, _encoder in _PLAIN.items():
    _register_plain(_cls, _encoder)
encode.register(type(None), lambda _: b"none:0:")
encode.register(bool, lambda value: b"bool:1:1" if value else b"bool:1:0")
encode.register(pathlib.PurePath, lambda value: _frame(b"path", value.as_posix().encode()))


def _encode_other(value: object) -> bytes:
    cls = type(value)
    name = encode(cls.__qualname__)  # not the module: a pipeline may run as __main__ or be imported
    custom = getattr(cls, "__flow_hash__", None)
    if custom is not None:
        digest = custom(value)
        if not isinstance(digest, bytes):
            raise WorkflowDefinitionError(
                f"{_type_name(cls)}.__flow_hash__ must return bytes, got {type(digest).__name__}"
            )
        return _frame(b"custom", name + encode(digest))
    if isinstance(value, enum.Enum):
        return _frame(b"enum", name + encode(value.name))
    if isinstance(value, tuple) and hasattr(cls, "_fields"):
        fields = b"".join(encode(f) + encode(v) for f, v in zip(cls._fields, value, strict=True))
        return _frame(b"namedtuple", name + fields)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = b"".join(encode(f.name) + encode(getattr(value, f.name)) for f in dataclasses.fields(value))
        return _frame(b"dataclass", name + fields)
    array = _encode_array(value)
    if array is not None:
        return array
    for base, encoder in _PLAIN.items():
        if isinstance(value, base):
            return _frame(b"subclass", name + encoder(base(value)))
    raise UnhashableLiteral(cls)


def _encode_array(value: object) -> bytes | None:
    """Encode a numpy array or scalar, or a torch tensor, by dtype, shape and bytes; None for anything else."""
    # Looked up, never imported: if the value exists, so does its library.
    np = sys.modules.get("numpy")
    if np is not None and (type(value) is np.ndarray or isinstance(value, np.generic)):
        if value.dtype.hasobject:  # the bytes would be pointers
            raise UnhashableLiteral(type(value))
        meta = encode(type(value).__qualname__) + encode(str(value.dtype.descr)) + encode(value.shape)
        return _frame(b"numpy", meta + encode(value.tobytes()))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.device.type == "meta" or value.is_quantized:
            raise UnhashableLiteral(type(value))
        flat = value.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
        data = flat.numpy().tobytes() if np is not None else bytes(flat.tolist())
        meta = encode(type(value).__qualname__) + encode(str(value.dtype)) + encode(tuple(value.shape))
        return _frame(b"tensor", meta + encode(data))
    return None


def hash_labelled(parts: list) -> str:
    """Return the hex sha256 of a labelled list such as ``["node", fingerprint, ["inputs", [...]]]``."""
    return hashlib.sha256(_encoded(parts)).hexdigest()


def _encoded(value: object) -> bytes:
    try:
        return encode(value)
    except RecursionError:  # a list that holds itself, or one nested thousands deep
        raise UnhashableLiteral(
            f"cannot hash a literal of type {_type_name(type(value))}: it is nested too deeply "
            "(or holds itself); pass it through an operator so that it becomes an artifact"
        ) from None


_LITERAL = encode("literal")


def literal_digest(value: object) -> str:
    """Return the digest of a literal argument: ``hash_labelled(["literal", value])``."""
    # The builder calls this for every literal of every node: skip dispatch for the common kinds.
    kind = type(value)
    if kind is int:
        item = _frame(b"int", b"%d" % value)
    elif kind is str:
        item = _str(value)
    else:
        item = _encoded(value)
    return hashlib.sha256(_frame(b"list", _LITERAL + item)).hexdigest()


def literal_digests(values: list[int] | list[str] | tuple[Any, ...]) -> list[str]:
    """`literal_digest` of each of many ints, or of many strs (a big map's items), in one loop."""
    sha, frame, literal = hashlib.sha256, _frame, _LITERAL
    if type(values[0]) is int:  # _frame inlined: a million items spend most of their time in calls
        texts = [b"%d" % v for v in values]
        bodies = [b"%sint:%d:%s" % (literal, len(t), t) for t in texts]
        return [sha(b"list:%d:%s" % (len(b), b)).hexdigest() for b in bodies]
    return [sha(frame(b"list", literal + _str(v))).hexdigest() for v in values]


def _str(value: str) -> bytes:
    return _frame(b"str", value.encode("utf-8", "surrogatepass"))


_NODE, _INPUTS = encode("node"), encode("inputs")


def node_key(fingerprint_digest: str, inputs: Mapping[str, str]) -> str:
    """Return a node's cache key from its operator fingerprint and the digests of its inputs by parameter.

    The same bytes as ``hash_labelled(["node", fingerprint, ["inputs", sorted(inputs.items())]])``,
    built without dispatch: it is computed for every node of every run.
    """
    pairs = b"".join(_frame(b"tuple", _str(k) + _str(v)) for k, v in sorted(inputs.items()))
    inner = _frame(b"list", _INPUTS + _frame(b"list", pairs))
    return hashlib.sha256(_frame(b"list", _NODE + _str(fingerprint_digest) + inner)).hexdigest()


def tuple_digest(field_digests: list[str]) -> str:
    """Return the digest of a whole NamedTuple output passed on, from its fields' digests."""
    return hash_labelled(["tuple", list(field_digests)])


# Code fingerprints live in flowlib.fingerprint, which imports this module: re-exported on first
# access, so that either module can be imported first.
_FINGERPRINT_NAMES = frozenset(
    {"Fingerprint", "diff_fingerprints", "find_project_root", "normalize_source", "operator_fingerprint"}
)


def __getattr__(name: str) -> Any:
    if name in _FINGERPRINT_NAMES:
        from flowlib import fingerprint

        return getattr(fingerprint, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
