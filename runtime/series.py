"""The series frame: the containers of one time series (``Codec.compress_series``) in one
length-prefixed byte string, for stores that keep one value per key (a zarr chunk).

    frame = pack_series(codec.compress_series(images))
    images_back = codec.decompress_series(unpack_series(frame))

Layout (``docs/format.md``, series frame): magic ``b"STCS"``, a format byte (1), a varint
count *n* (1 ... ``MAX_SERIES``), *n* varint lengths (each >= 1), then the *n* containers back
to back; the lengths must add up to exactly the bytes after them. The containers carry their
own CRCs and the later ones the id of the first, so the frame needs no checksum of its own.
Pure Python: no NumPy, no torch.
"""
from __future__ import annotations

from stcm.errors import CorruptError, NotStcmFileError, TruncatedError
from stcm.runtime.fields import ByteReader, write_varint

SERIES_MAGIC = b"STCS"
SERIES_FORMAT = 1
#: the most images one frame may hold: a reader's bound on the length table it reads
MAX_SERIES = 1 << 16


def pack_series(blobs: list[bytes]) -> bytes:
    """One frame holding ``blobs`` (the containers of one series, first = reference).

    >>> pack_series([b"ab", b"c"]).hex()
    '5354435301020201616263'
    """
    if not 1 <= len(blobs) <= MAX_SERIES:
        raise ValueError(f"a series frame holds 1..{MAX_SERIES} containers, got {len(blobs)}")
    if any(not blob for blob in blobs):
        raise ValueError("a series frame cannot hold an empty container")
    head = [SERIES_MAGIC, bytes([SERIES_FORMAT]), write_varint(len(blobs))]
    head += [write_varint(len(blob)) for blob in blobs]
    return b"".join(head + [bytes(blob) for blob in blobs])


def unpack_series(data: bytes | memoryview) -> list[bytes]:
    """The containers of a frame, in order; every length checked against the bytes present.

    >>> unpack_series(bytes.fromhex("5354435301020201616263"))
    [b'ab', b'c']
    """
    data = bytes(data)
    if data[:4] != SERIES_MAGIC:
        if SERIES_MAGIC.startswith(data):
            raise TruncatedError(f"truncated stcm series frame: {len(data)} bytes")
        raise NotStcmFileError(f"not an stcm series frame (no {SERIES_MAGIC!r} magic): it "
                               f"starts with {data[:8]!r}")
    reader = ByteReader(data, 4, what="stcm series frame")
    version = reader.u8("format")
    if version != SERIES_FORMAT:
        raise CorruptError(f"stcm series frame of format {version}; this stcm reads format "
                           f"{SERIES_FORMAT}")
    count = reader.varint("count", MAX_SERIES)
    if count < 1:
        raise CorruptError("stcm series frame holds no containers")
    # Each length is at most what is left, so the table can never claim more than is there.
    lengths = []
    for i in range(count):
        length = reader.varint(f"length {i}", reader.remaining)
        if length < 1:
            raise CorruptError(f"stcm series frame: container {i} is empty")
        lengths.append(length)
    if sum(lengths) != reader.remaining:
        kind = TruncatedError if sum(lengths) > reader.remaining else CorruptError
        raise kind(f"stcm series frame: its lengths add up to {sum(lengths)} bytes, "
                   f"{reader.remaining} follow them")
    return [reader.take(length, f"container {i}") for i, length in enumerate(lengths)]
