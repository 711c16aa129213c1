"""The series frame: containers of one series in one byte string, every length tied to the
bytes present, and every damaged or foreign frame a clean error."""
from __future__ import annotations

import pytest

from stcm.errors import ContainerError, CorruptError, NotStcmFileError, TruncatedError
from stcm.runtime.fields import write_varint
from stcm.runtime.series import MAX_SERIES, SERIES_MAGIC, pack_series, unpack_series

BLOBS = [b"STCM" + bytes(range(200)), b"x", b"STCM" * 40]


def test_frame_round_trips_its_containers_in_order():
    frame = pack_series(BLOBS)
    assert unpack_series(frame) == BLOBS
    assert unpack_series(memoryview(frame)) == BLOBS
    # magic, format, count and one varint per length (204, 1, 160 bytes: 2 + 1 + 2 bytes)
    assert len(frame) == sum(map(len, BLOBS)) + 4 + 1 + 1 + 2 + 1 + 2


def test_every_truncation_is_a_clean_error():
    frame = pack_series(BLOBS)
    for n in range(len(frame)):
        with pytest.raises(ContainerError):
            unpack_series(frame[:n])


def test_the_lengths_must_account_for_every_byte():
    frame = pack_series(BLOBS)
    with pytest.raises(CorruptError, match="add up"):
        unpack_series(frame + b"\x00")
    # a length larger than what follows is refused before any container is cut
    lying = SERIES_MAGIC + bytes([1]) + write_varint(2) + write_varint(3) + write_varint(9)
    with pytest.raises(ContainerError):
        unpack_series(lying + b"abcdef")


@pytest.mark.parametrize("frame, error, match", [
    (SERIES_MAGIC + bytes([2, 1, 1]) + b"a", CorruptError, "format 2"),
    (SERIES_MAGIC + bytes([1, 0]), CorruptError, "no containers"),
    (SERIES_MAGIC + bytes([1, 2, 0, 1]) + b"a", CorruptError, "empty"),
    (SERIES_MAGIC + bytes([1]) + write_varint(MAX_SERIES + 1), CorruptError, "count"),
    (b"STCM\x02\x02", NotStcmFileError, "series frame"),
    (b"", TruncatedError, "truncated"),
])
def test_malformed_frames_are_refused(frame, error, match):
    with pytest.raises(error, match=match):
        unpack_series(frame)


def test_a_frame_holds_at_least_one_non_empty_container():
    with pytest.raises(ValueError):
        pack_series([])
    with pytest.raises(ValueError):
        pack_series([b"a", b""])
