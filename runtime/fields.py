"""The field encoding of stcm headers: validation helpers, canonical JSON, varints and a
bounded byte reader (``docs/format.md``). Pure Python: no NumPy, no torch.

Every read is bounded by the bytes present and raises ``CorruptError`` or ``TruncatedError``
naming the field, so a malformed header can never read past its record.
"""
from __future__ import annotations

import json
import struct
from typing import Any

from stcm.errors import CorruptError, TruncatedError

#: the longest JSON or text field a header may hold
MAX_JSON_BYTES = 1 << 20
F64 = struct.Struct("<d")
U16 = struct.Struct("<H")


def field_error(name: str, message: str) -> CorruptError:
    return CorruptError(f"invalid stcm header field '{name}': {message}")


def is_int(v: Any) -> bool:
    # bool is an int subclass, but True as a height is surely a bug (or a corrupt file).
    return isinstance(v, int) and not isinstance(v, bool)


def is_numpy_real(v: Any) -> bool:
    # NumPy scalars (e.g. a nodata read from a raster) are accepted without importing NumPy.
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "uif"


def is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) or is_numpy_real(v)


def int_field(name: str, v: Any, lo: int, hi: int | None = None) -> int:
    if is_numpy_real(v) and v.dtype.kind in "ui":  # e.g. a size taken from array.shape
        v = int(v)
    if not is_int(v):
        raise field_error(name, f"must be an integer, got {type(v).__name__} {v!r:.60}")
    if v < lo or (hi is not None and v > hi):
        bound = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise field_error(name, f"must be {bound}, got {v}")
    return int(v)



def canonical_json(value: Any) -> str:
    """The one JSON serialisation stcm writes: sorted keys, no whitespace, UTF-8, no NaN."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def json_object(name: str, value: Any) -> dict:
    """``value`` exactly as a reader sees it after a JSON round trip (tuples become lists)."""
    if not isinstance(value, dict):
        raise field_error(name, f"must be a JSON object (dict), got {type(value).__name__}")
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise field_error(name, f"is not JSON-serialisable: {exc}") from exc


def parse_json_object(raw: bytes, name: str) -> dict:
    """Strict JSON object: UTF-8, no duplicate keys, no NaN/Infinity tokens."""
    def pairs(items):
        seen = {}
        for k, v in items:
            if k in seen:
                raise ValueError(f"duplicate key {k!r:.40}")
            seen[k] = v
        return seen

    def no_constant(token):
        raise ValueError(f"{token} is not valid JSON")

    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=pairs,
                           parse_constant=no_constant)
    except UnicodeDecodeError as exc:
        raise field_error(name, f"is not UTF-8 ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise field_error(name, f"is not valid JSON ({str(exc)[:200]})") from exc
    if not isinstance(value, dict):
        raise field_error(name, f"must be a JSON object, got {type(value).__name__}")
    return value


def write_varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, low bits first, high bit set on all but the last.

    >>> write_varint(300).hex()
    'ac02'
    """
    if not is_int(value) or value < 0:
        raise ValueError(f"varint needs a non-negative integer, got {value!r}")
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def zigzag(value: int) -> int:
    return 2 * value if value >= 0 else -2 * value - 1


def unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


class ByteReader:
    """Reads a bounded byte range front to back; every read past its end is a TruncatedError
    naming what was being read, every malformed value a CorruptError."""

    def __init__(self, data: bytes | memoryview, start: int = 0, end: int | None = None,
                 what: str = "stcm header"):
        self.data = data
        self.pos = start
        self.end = len(data) if end is None else end
        self.what = what

    @property
    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, n: int, name: str) -> bytes:
        if n > self.remaining:
            raise TruncatedError(f"truncated {self.what}: {name} needs {n} bytes, "
                                 f"{self.remaining} left")
        chunk = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return chunk

    def u8(self, name: str) -> int:
        return self.take(1, name)[0]

    def u16(self, name: str) -> int:
        return U16.unpack(self.take(2, name))[0]

    def f64(self, name: str) -> float:
        return F64.unpack(self.take(8, name))[0]

    def varint(self, name: str, hi: int = 2 ** 64 - 1) -> int:
        """A minimal (canonical) LEB128 integer <= ``hi``."""
        value = shift = 0
        for i in range(10):
            byte = self.u8(name)
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise field_error(name, "varint has a redundant trailing zero byte")
                if value > hi:
                    raise field_error(name, f"must be <= {hi}, got {value}")
                return value
        raise field_error(name, "varint longer than 10 bytes")

    def text(self, name: str, limit: int) -> bytes:
        return self.take(self.varint(f"{name} length", limit), name)

