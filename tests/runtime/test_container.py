"""The stcm container: round trips, a compact header, and every kind of damaged or foreign
input is refused.

Damaged files are made by editing real containers byte by byte; where a test needs a field to
be wrong *behind* a valid checksum (a crafted file), ``craft`` encodes the header record by
hand, following docs/format.md rather than the writer, and reseals it with a valid CRC32.
"""
from __future__ import annotations

import hashlib
import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from stcm.errors import (ContainerError, CorruptError, ImageTooLargeError, ModelMismatchError,
                         NotStcmFileError, TruncatedError, UnsupportedVersionError)
from stcm.runtime.container import (KIND_Y, KIND_Z, Container, Georeference, Header,
                                    StreamEntry, check_model, check_reference, num_tiles,
                                    peek_header, quality_on_grid, read_container, short_id,
                                    tile_grid, write_container)
from stcm.runtime.fields import write_varint

MODEL = hashlib.sha256(b"model A").digest()
WKT = ('PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
       '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
       'PROJECTION["Transverse_Mercator"],PARAMETER["central_meridian",15],UNIT["metre",1]]')
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def make_header(**changes) -> Header:
    """5 bands (2 band groups), 100x120 -> padded 128x128, latent 8x8, 4x4 tiles: 2x2 grid."""
    args = dict(
        model_id=short_id(MODEL), height=100, width=120, bands=5, dtype="uint16",
        normalization={"dtype": "uint16", "lo": [200, 210, 190, 0, 5],
                       "hi": [9000, 8800, 9100, 65535, 7]},
        quality=0.75, tile_size=4, georef=Georeference(WKT, TRANSFORM, float("nan")),
        reference_id=short_id(hashlib.sha256(b"the first image").digest()),
        numerics="torch-cpu-float32", extra={"note": "séries"})
    args.update(changes)
    return Header(**args)


def make_streams(header: Header, seed: int = 0, size: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    return {key: rng.integers(0, 256, int(rng.integers(1, size)), dtype=np.uint8).tobytes()
            for key in header.stream_keys()}


@pytest.fixture(scope="module")
def sample():
    header = make_header()
    streams = make_streams(header)
    return header, streams, write_container(header, streams)


def _v(value: int) -> bytes:
    return write_varint(value)


def craft(*, flags=0, model=MODEL[:16], height=64, width=64, bands=1, dtype=1, quality=65535,
          tile_size=4, ranges=None, tail=b"", header_extra=b"", table=None, minor=3,
          streams=(b"z", b"y"), checksums=(), major=2) -> bytes:
    """A container written by hand from docs/format.md, fields unchecked, CRC32 valid.

    ``ranges`` is the encoded band ranges (default: lo 0, span 1000 per band, integer
    dtypes); ``tail`` follows them (reference id, georef, numerics, extra); ``checksums``
    (u32s) are the 2.4 symbol checksum table after the last field; ``header_extra`` is
    appended to the header record; ``table`` replaces the stream table.
    """
    if ranges is None:
        ranges = (_v(0) + _v(1000)) * bands
    head = (bytes([flags]) + model + _v(height) + _v(width) + _v(bands) + bytes([dtype])
            + struct.pack("<H", quality) + _v(tile_size) + ranges + tail
            + b"".join(struct.pack("<I", c) for c in checksums) + header_extra)
    if table is None:
        table = b"".join(_v(len(s)) + struct.pack("<I", zlib.crc32(s)) for s in streams)
    record = _v(len(head)) + head + table
    prefix = b"STCM" + bytes([major, minor]) + _v(len(record)) + record
    return prefix + struct.pack("<I", zlib.crc32(prefix)) + b"".join(streams)


def reseal(data: bytes, record_edit) -> bytes:
    """Applies ``record_edit`` to the record bytes of a real container and fixes the CRC32."""
    length, pos = 0, 6
    for shift in range(0, 70, 7):
        byte = data[pos]
        pos += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
    record = bytearray(data[pos:pos + length])
    record_edit(record)
    prefix = data[:6] + _v(len(record)) + bytes(record)
    return prefix + struct.pack("<I", zlib.crc32(prefix)) + data[pos + length + 4:]


# -- round trip ------------------------------------------------------------------------------

def test_round_trip(sample):
    header, streams, data = sample
    c = read_container(data)
    assert c.header == header
    assert math.isnan(c.header.georef.nodata) and c.header.georef.crs == WKT
    assert c.header.georef.transform == TRANSFORM
    assert c.header.reference_id == header.reference_id and c.header.extra == {"note": "séries"}
    assert c.header.normalization["hi"] == [9000.0, 8800.0, 9100.0, 65535.0, 7.0]
    assert c.header.numerics == "torch-cpu-float32"
    assert (c.header.pad, c.header.latent_shape, c.header.z_shape) == ((28, 8), (8, 8), (2, 2))
    assert c.header.band_groups == 2 and c.header.tiles == 4 and len(c.entries) == 2 * (1 + 4)
    for key, chunk in streams.items():
        assert c.stream(*key) == chunk
    c.verify()
    # Laid out in key order, back to back, right after the record's CRC32.
    keys = [e.key for e in c.entries]
    assert keys == sorted(streams) and all(isinstance(e, StreamEntry) for e in c.entries)
    assert [e.offset for e in c.entries] == list(np.cumsum([0] + [e.length for e in
                                                               c.entries])[:-1])
    assert len(data) == c.payload_start + sum(len(s) for s in streams.values())
    assert c.bits_per_pixel == pytest.approx(8 * len(data) / (100 * 120))
    assert c.container_id == hashlib.sha256(data).digest()
    assert peek_header(data) == header
    assert write_container(header, streams) == data  # deterministic


def test_the_writer_follows_the_documented_layout():
    header = Header(model_id=MODEL[:16], height=64, width=64, bands=1, dtype="uint16",
                    normalization={"dtype": "uint16", "lo": [0], "hi": [1000]},
                    quality=1.0, tile_size=4)
    streams = {(0, KIND_Z, 0): b"z", (0, KIND_Y, 0): b"y"}
    assert write_container(header, streams) == craft()  # no checksums: the 2.3 layout
    data = craft()
    assert data[:6] == b"STCM\x02\x03" and data[9:25] == MODEL[:16]
    sums = {(0, KIND_Z, 0): 1, (0, KIND_Y, 0): 0xDEADBEEF}
    data = write_container(header, streams, sums)
    assert data == craft(major=3, minor=1, checksums=(1, 0xDEADBEEF))
    assert data[:6] == b"STCM\x03\x01" and struct.pack("<II", 1, 0xDEADBEEF) in data
    c = read_container(data)
    assert c.checksums == (1, 0xDEADBEEF) and c.checksum(0, KIND_Y, 0) == 0xDEADBEEF
    # 3.x codes the image's footprint (64 + 8 pixels: 5 cells, the whole 4 x 4 latent and
    # more); 2.4, the same layout, codes every latent position
    assert c.version == (3, 1) and c.coded_box == header.footprint == (0, 0, 5, 5)
    two = read_container(craft(minor=4, checksums=(1, 2)))
    assert two.version == (2, 4) and two.coded_box is None
    assert c.header == header and peek_header(data) == header


@pytest.mark.parametrize("bands,dtype,limit", [(3, "uint8", 32), (1, "uint8", 32),
                                                (4, "uint16", 64), (13, "uint16", 120),
                                                (3, "float32", 80)])
def test_header_is_compact(bands, dtype, limit):
    # The per-image header of an image without georeferencing, as the codec writes it.
    hi = {"uint8": 255, "uint16": 20000, "float32": 1.5}[dtype]
    lo = {"uint8": 0, "uint16": 6000, "float32": -0.25}[dtype]
    header = Header(model_id=MODEL[:16], height=10980, width=10980, bands=bands, dtype=dtype,
                    normalization={"dtype": dtype, "lo": [lo] * bands, "hi": [hi] * bands},
                    quality=0.3, tile_size=64)
    assert len(header.to_bytes()) <= limit
    streams = make_streams(header, size=2)
    c = read_container(write_container(header, streams, dict.fromkeys(streams, 0)))
    # Everything before the payload: 12 bytes of framing and 9-13 bytes per stream (a
    # length and CRC32 in the table, the symbol checksum after the header).
    assert c.header_bytes <= 12 + len(header.to_bytes()) + 13 * header.num_streams


def test_georeferencing_is_stored_compactly_and_exactly():
    for georef, size in ((Georeference("EPSG:32633", TRANSFORM, None), 40),
                         (Georeference("EPSG:4326", (0.1, 0.01, 3.0, -0.02, -0.1, 50.0), 0.0), 62),
                         (Georeference(WKT, None, float("-inf")), len(WKT) + 15),
                         (Georeference(None, None, float("inf")), 12)):
        header = make_header(georef=georef, reference_id=None, extra={}, numerics="exact-int24")
        plain = make_header(georef=None, reference_id=None, extra={}, numerics="exact-int24")
        assert len(header.to_bytes()) - len(plain.to_bytes()) <= size
        back = read_container(write_container(header, make_streams(header))).header
        assert back == header and back.georef.transform == georef.transform
    with pytest.raises(CorruptError, match="not canonical"):  # an EPSG code must be a code
        tail = b"\x02" + _v(10) + b"EPSG:32633" + b"\x00\x00"
        read_container(craft(flags=1, tail=tail))


def test_quality_is_stored_on_a_grid_of_65535_steps():
    for q in (0.0, 0.123456789, 0.5, 0.75, 1.0):
        header = make_header(quality=q)
        assert header.quality == quality_on_grid(q)
        assert abs(header.quality - q) <= 0.5 / 65535
        assert read_container(write_container(header, make_streams(header))).header.quality \
            == header.quality


def test_special_nodata_and_minimal_headers():
    for nodata in (float("inf"), float("-inf"), np.float32(0), -9999):
        header = make_header(georef=Georeference(None, None, nodata), reference_id=None,
                             height=64, width=64, bands=1, tile_size=4096, extra={},
                             normalization={"dtype": "uint16", "lo": [0], "hi": [1]})
        c = read_container(write_container(header, make_streams(header)))
        assert c.header == header and c.header.reference_id is None
        assert c.header.flags & 0b11 == 0b01
    header = make_header(georef=None, reference_id=None, numerics="exact-int24", extra={})
    c = read_container(write_container(header, make_streams(header)))
    assert c.header.georef is None and c.header.flags == 0


def test_uint8_full_range_costs_no_bytes_and_other_ranges_are_kept():
    full = make_header(dtype="uint8", bands=3, normalization={
        "dtype": "uint8", "lo": [0] * 3, "hi": [255] * 3}, georef=None, reference_id=None,
        extra={}, numerics="exact-int24")
    assert full.flags == 1 << 4 and len(full.to_bytes()) == 1 + 16 + 1 + 1 + 1 + 1 + 2 + 1
    odd = make_header(dtype="uint8", bands=3, normalization={
        "dtype": "uint8", "lo": [0, 3, 0], "hi": [255, 200, 255]})
    assert read_container(write_container(odd, make_streams(odd))).header == odd
    with pytest.raises(CorruptError, match="flags"):  # explicit 0..255 is not canonical
        read_container(craft(dtype=0, ranges=_v(0) + _v(255)))


def test_float_images_keep_their_exact_ranges():
    header = make_header(dtype="float64", bands=2, normalization={
        "dtype": "float64", "lo": [-1e-300, 0.1], "hi": [2.5e300, 0.30000000000000004]})
    back = read_container(write_container(header, make_streams(header))).header
    assert back.normalization == header.normalization


def test_tile_grid():
    assert tile_grid((8, 8), 4) == (2, 2) and num_tiles((8, 8), 4) == 4
    assert tile_grid((9, 8), 4) == (3, 2) and num_tiles((4, 4), 4096) == 1
    for bad in ((0, 4), (4,), (4.0, 4)):
        with pytest.raises(ValueError):
            tile_grid(bad, 4)
    with pytest.raises(ValueError):
        num_tiles((4, 4), 0)


# -- damaged input -----------------------------------------------------------------------------

def test_every_truncation_is_reported(sample):
    _, _, data = sample
    for n in range(1, len(data)):
        with pytest.raises(TruncatedError) as info:
            read_container(data[:n])
        assert f"got {n}" in str(info.value), (n, str(info.value))


def test_every_header_and_table_byte_flip_is_detected(sample):
    _, _, data = sample
    end = read_container(data).payload_start
    for i in range(end):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(data)
            damaged[i] ^= mask
            with pytest.raises(ContainerError):
                read_container(bytes(damaged))


def test_payload_flip_is_found_in_that_stream_only(sample):
    _, streams, data = sample
    c = read_container(data)
    for entry in c.entries[::3]:
        damaged = bytearray(data)
        damaged[c.payload_start + entry.offset + entry.length // 2] ^= 0x10
        bad = read_container(bytes(damaged))  # the header and table are intact
        g, kind, tile = entry.key
        with pytest.raises(CorruptError, match=f"band group {g}, {'zy'[kind]} stream, tile {tile}"):
            bad.stream(g, kind, tile)
        for key in streams:
            if key != entry.key:
                assert bad.stream(*key) == streams[key]
        with pytest.raises(CorruptError):
            bad.verify()


def test_trailing_garbage(sample):
    _, _, data = sample
    with pytest.raises(CorruptError, match="trailing garbage"):
        read_container(data + b"\x00")


@pytest.mark.parametrize("blob", [
    b"", b"\x89PNG\r\n\x1a\n" + bytes(100), b"II*\x00" + bytes(100), b"\xff\xd8\xff\xe0",
    b'{"height": 64, "width": 64}', b"  [1, 2]", b"X", b"STC-" + bytes(100),
    np.random.default_rng(7).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
])
def test_foreign_data(blob):
    with pytest.raises(NotStcmFileError):
        read_container(blob)
    with pytest.raises(NotStcmFileError):
        peek_header(blob)


def test_foreign_data_is_named():
    with pytest.raises(NotStcmFileError, match="PNG"):
        read_container(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(NotStcmFileError, match="JSON"):
        read_container(b'{"a": 1}')
    with pytest.raises(NotStcmFileError, match="empty"):
        read_container(b"")


def test_versions(sample):
    _, _, data = sample
    for major in (4, 255, 0):
        future = bytearray(data)
        future[4:6] = bytes([major, 0])
        with pytest.raises(UnsupportedVersionError, match=f"version {major}.0 is not .*reads "
                                                          r"versions 2\.x and 3\.x"):
            read_container(bytes(future))
        with pytest.raises(UnsupportedVersionError):
            read_container(bytes(future[:6]))  # checked before anything else
    old = bytearray(data)
    old[4:6] = b"\x01\x00"  # stcm 0.2 wrote format 1: another header and quality rule
    with pytest.raises(UnsupportedVersionError, match=r"1\.0 \(written by stcm 0.2\).*stcm==0.2"):
        read_container(bytes(old))
    # A newer minor may append header fields after the checksum table; this reader skips
    # them. The same bytes in a file of this minor are corruption.
    for major, minor in ((2, 5), (3, 2)):
        newer = read_container(craft(checksums=(5, 6), header_extra=b"\x07new", major=major,
                                     minor=minor))
        assert newer.header.height == 64 and newer.checksums == (5, 6)
    for major, minor in ((2, 4), (3, 0), (3, 1)):
        with pytest.raises(CorruptError, match="checksum table has 12 bytes"):
            read_container(craft(checksums=(5, 6), header_extra=b"\x07new", major=major,
                                 minor=minor))
    assert read_container(craft(minor=0)).header.height == 64  # stcm 0.3 wrote 2.0
    for minor in (0, 1, 2, 3):  # no symbol checksums before 2.4
        assert read_container(craft(minor=minor)).checksums is None
        with pytest.raises(CorruptError, match="after the last field"):
            read_container(craft(header_extra=b"\x07new", minor=minor))
        with pytest.raises(CorruptError, match="after the last field"):
            read_container(craft(checksums=(5, 6), minor=minor))


def test_the_symbol_checksum_table_matches_the_stream_count():
    assert read_container(craft(checksums=(5, 6), minor=4)).checksums == (5, 6)
    for sums, major, minor in [((), 2, 4), ((5,), 2, 4), ((5, 6, 7), 2, 4), ((), 2, 5),
                               ((5,), 2, 5), ((), 3, 0), ((5,), 3, 0), ((5, 6, 7), 3, 0),
                               ((5,), 3, 1)]:
        with pytest.raises(CorruptError, match=rf"checksum table has {4 * len(sums)} bytes.*"
                                               r"2 streams .* need 8"):
            read_container(craft(checksums=sums, major=major, minor=minor))
    # A tail of 3 bytes is not a whole checksum either.
    with pytest.raises(CorruptError, match="checksum table has 7 bytes"):
        read_container(craft(checksums=(5,), header_extra=b"abc", minor=4))
    # Many streams claimed against a few bytes: refused by the size, before reading any.
    tracemalloc.start()
    try:
        with pytest.raises(CorruptError, match=r"checksum table has 8 bytes, but the header's "
                                               r"2147483649 streams .* need 8589934596"):
            read_container(craft(height=2 ** 31 - 1, width=256, tile_size=1, checksums=(5, 6),
                                 minor=4), max_pixels=2 ** 63)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_writer_refuses_checksums_that_are_not_one_u32_per_stream():
    header = make_header()
    streams = make_streams(header)
    good = dict.fromkeys(streams, 7)
    assert read_container(write_container(header, streams, good)).checksums == (7,) * 10
    key = (0, KIND_Y, 1)
    for bad in [{**good, key: -1}, {**good, key: 2 ** 32}, {**good, key: True},
                {**good, key: "7"}, {**good, key: 1.0}, {k: 7 for k in list(good)[1:]},
                {**good, (9, KIND_Y, 0): 7}, [7] * 10]:
        with pytest.raises(CorruptError, match="checksum"):
            write_container(header, streams, bad)
    assert read_container(write_container(header, streams, {**good, key: np.uint32(9)})
                          ).checksum(*key) == 9


def test_flags():
    with pytest.raises(TruncatedError, match="mask kind"):  # 2.3: bit 7, the mask
        read_container(craft(flags=1 << 7))
    with pytest.raises(CorruptError, match="dtype range"):
        read_container(craft(flags=1 << 4, ranges=b""))  # uint16 has no implied range
    with pytest.raises(TruncatedError, match="reference id"):  # flag set, field absent
        read_container(craft(flags=1 << 1))


_RANGE = _v(0) + _v(1000)


@pytest.mark.parametrize("fields, match", [
    (dict(height=0), "'height'"), (dict(width=2 ** 31), "'width'"),
    (dict(bands=70000, ranges=_RANGE * 70000), "'bands'"), (dict(bands=0, ranges=b""), "'bands'"),
    (dict(dtype=7), "'dtype'"), (dict(tile_size=0), "'tile_size'"),
    (dict(tile_size=4097), "'tile_size'"), (dict(ranges=_v(0) + _v(0)), "hi > lo"),
    (dict(dtype=5, ranges=struct.pack("<dd", 0.0, math.nan)), "non-finite"),
    (dict(dtype=5, ranges=struct.pack("<dd", 1.0, 1.0)), "hi > lo"),
    (dict(ranges=b"\x80\x00" + _v(5)), "redundant"), (dict(ranges=b"\xff" * 11), "longer"),
    (dict(flags=1, tail=b"\x05\x00\x00"), "georef.crs"),
    (dict(flags=1, tail=b"\x01\x00\x00\x00"), "EPSG code 0"),
    (dict(flags=1, tail=b"\x02\x02\xff\xfe\x00\x00"), "UTF-8"),
    (dict(flags=1, tail=b"\x00\x03\x00"), "georef.transform"),
    (dict(flags=1, tail=b"\x00\x01" + struct.pack("<4d", 1, 0, math.inf, 0) + b"\x00"),
     "finite"),
    (dict(flags=1, tail=b"\x00\x02" + struct.pack("<6d", *TRANSFORM) + b"\x00"),
     "not canonical"),
    (dict(flags=1, tail=b"\x00\x00\x02"), "georef.nodata"),
    (dict(flags=4, tail=_v(11) + b"exact-int24"), "not canonical"),
    (dict(flags=4, tail=_v(2) + "é".encode()), "'numerics'"),
    (dict(flags=4, tail=_v(0)), "'numerics'"),
    (dict(flags=8, tail=_v(3) + b"[1]"), "JSON object"),
    (dict(flags=8, tail=_v(2) + b"\xff\xfe"), "UTF-8"),
    (dict(flags=8, tail=_v(13) + b'{"a":1,"a":2}'), "duplicate"),
    (dict(flags=8, tail=_v(9) + b'{"q":NaN}'), "NaN"),
    (dict(flags=8, tail=_v(2) + b"{}"), "empty object"),
    (dict(flags=8, tail=_v(2 ** 21) + b"{}"), "'extra length'"),
])
def test_bad_field_behind_a_valid_checksum(fields, match):
    with pytest.raises(CorruptError, match=match):
        read_container(craft(**fields))


def test_deep_or_huge_json_is_refused_cleanly():
    for raw in (b"[" * 200_000 + b"]" * 200_000, b'{"x":' + b"9" * 5000 + b"}"):
        with pytest.raises(CorruptError, match="JSON"):
            read_container(craft(flags=8, tail=_v(len(raw)) + raw))


@pytest.mark.parametrize("field", ["height", "width", "bands", "tile_size"])
def test_a_zero_size_before_the_intra_bitmap_is_a_field_error(field):
    # The bitmap's size is computed from these before the Header exists (found by
    # benchmarks/fuzz.py: a ValueError traceback from tile_grid).
    reference = bytes(range(16))
    with pytest.raises(CorruptError, match=f"'{field}'"):
        read_container(craft(flags=0x22, tail=reference + b"\x01", **{field: 0}))


def test_absurd_sizes_are_refused_without_allocating():
    crafted = craft(height=10 ** 9, width=10 ** 9, tile_size=4096)
    tracemalloc.start()
    try:
        for read in (read_container, peek_header):
            with pytest.raises(ImageTooLargeError, match="max_pixels"):
                read(crafted)
        # Allowed by a caller, the stream count the header implies is then compared with the
        # table, still without building anything of the claimed size.
        with pytest.raises(CorruptError, match="streams"):
            read_container(crafted, max_pixels=10 ** 30)
        # A band count backed by no bytes is refused before a loop over the bands.
        with pytest.raises(TruncatedError, match="band ranges"):
            read_container(craft(bands=65535, ranges=b""))
        # A record length far beyond the data is refused before it is read.
        with pytest.raises(TruncatedError, match="expected at least"):
            read_container(b"STCM\x02\x00" + _v(2 ** 31) + bytes(50))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(CorruptError, match="record length"):
        read_container(b"STCM\x02\x00" + _v(2 ** 31 + 1) + bytes(50))
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        read_container(craft(), max_pixels=64 * 64 - 1)


def test_extra_size_limit(sample):
    _, streams, _ = sample
    with pytest.raises(CorruptError, match="extra"):
        write_container(make_header(extra={"x": "a" * (1 << 20)}), streams)


@pytest.mark.parametrize("table, streams, error, match", [
    (_v(1) + struct.pack("<I", zlib.crc32(b"z")), (b"z", b"y"), CorruptError, "streams"),
    (b"".join(_v(1) + struct.pack("<I", zlib.crc32(s)) for s in (b"z", b"y")) + b"\x00",
     (b"z", b"y"), CorruptError, "after the last"),
    (b"".join(_v(1) + struct.pack("<I", zlib.crc32(s)) for s in (b"z", b"y")),
     (b"z", b"yy"), CorruptError, "trailing garbage"),
    (b"".join(_v(2) + struct.pack("<I", zlib.crc32(s)) for s in (b"z", b"y")),
     (b"z", b"y"), TruncatedError, "expected"),
    (_v(1) + struct.pack("<I", 0) + _v(2 ** 32) + struct.pack("<I", 0),
     (b"z", b"y"), CorruptError, "stream length"),
])
def test_bad_stream_table_behind_a_valid_checksum(table, streams, error, match):
    data = craft(table=table, streams=streams)
    with pytest.raises(error, match=match):
        read_container(data)


def test_a_wrong_stream_crc_names_the_stream():
    table = b"".join(_v(1) + struct.pack("<I", zlib.crc32(b"?")) for _ in range(2))
    c = read_container(craft(table=table))
    with pytest.raises(CorruptError, match="band group 0, z stream, tile 0"):
        c.stream(0, KIND_Z, 0)


def test_a_bad_record_checksum_is_named(sample):
    _, _, data = sample
    damaged = reseal(data, lambda record: None)
    assert damaged == data
    flipped = bytearray(data)
    flipped[30] ^= 1
    with pytest.raises(CorruptError, match="CRC32"):
        read_container(bytes(flipped))


# -- writing and checks --------------------------------------------------------------------------

def test_write_refuses_wrong_streams(sample):
    header, streams, _ = sample
    for key in ((0, KIND_Y, 4), (0, KIND_Z, 1), (2, KIND_Z, 0), (0, 2, 0), (0, 1)):
        with pytest.raises(CorruptError, match="unexpected"):
            write_container(header, {**streams, key: b"x"})
    missing = dict(streams)
    del missing[(1, KIND_Y, 2)]
    with pytest.raises(CorruptError, match=r"missing \[\(1, 1, 2\)\]"):
        write_container(header, missing)
    with pytest.raises(CorruptError, match="not bytes"):
        write_container(header, {**streams, (0, KIND_Z, 0): "text"})


def test_invalid_headers_cannot_be_built():
    with pytest.raises(CorruptError, match="model_id"):
        make_header(model_id=b"short")
    with pytest.raises(CorruptError, match="model_id"):
        make_header(model_id=MODEL)  # the full digest: pass short_id(digest)
    with pytest.raises(CorruptError, match="normalization"):
        make_header(normalization={"dtype": "uint16", "lo": [0] * 5,
                                   "hi": [1, 1, 1, 1, float("inf")]})
    with pytest.raises(CorruptError, match="integers"):
        make_header(normalization={"dtype": "uint16", "lo": [0.5] * 5, "hi": [9] * 5})
    with pytest.raises(CorruptError, match="extra"):
        make_header(extra={"x": float("nan")})
    with pytest.raises(CorruptError, match="quality"):
        make_header(quality=float("nan"))
    with pytest.raises(CorruptError, match="numerics"):
        make_header(numerics="")
    with pytest.raises(CorruptError, match="height"):
        make_header(height=True)


def test_stream_lookup_of_a_missing_key(sample):
    _, _, data = sample
    c = read_container(data)
    for key in ((2, KIND_Y, 0), (0, KIND_Z, 1), (0, KIND_Y, 4), (0, 5, 0)):
        with pytest.raises(KeyError):
            c.stream(*key)


def test_check_model(sample):
    _, _, data = sample
    c = read_container(data)
    check_model(c, MODEL)
    other = hashlib.sha256(b"model B").digest()
    with pytest.raises(ModelMismatchError) as info:
        check_model(c, other)
    message = str(info.value)
    assert MODEL.hex()[:12] in message and other.hex()[:12] in message
    assert "use the same model" in message


def test_series_reference():
    first_header = make_header(reference_id=None)
    first = write_container(first_header, make_streams(first_header, 1))
    first_id = short_id(read_container(first).container_id)
    later_header = make_header(reference_id=first_id)
    later = read_container(write_container(later_header, make_streams(later_header, 2)))
    check_reference(later, first)
    with pytest.raises(ModelMismatchError):
        check_reference(later, None)
    with pytest.raises(ModelMismatchError):
        check_reference(later, first + b"x")
    check_reference(read_container(first), None)
    # An image coded alone (auto's choice when the reference saves nothing) takes any.
    check_reference(read_container(first), first)


def test_container_is_plain_data(sample):
    _, _, data = sample
    c = read_container(bytearray(data))
    assert isinstance(c, Container) and isinstance(c.data, bytes)
    assert read_container(memoryview(data)).header == c.header


def test_intra_tile_flags_round_trip_as_a_bitmap_after_the_reference_id():
    header = make_header(intra_tiles=[1, 6])  # of 2 band groups x 4 tiles
    assert header.intra_tiles == (1, 6)
    assert header.intra_mask(0) == [False, True, False, False]
    assert header.intra_mask(1) == [False, False, True, False]
    data = write_container(header, make_streams(header))
    assert read_container(data).header == header
    plain = make_header()
    assert len(header.to_bytes()) == len(plain.to_bytes()) + 1  # 8 tiles: one byte
    assert read_container(write_container(plain, make_streams(plain))).header.intra_tiles == ()


@pytest.mark.parametrize("tiles,match", [((3, 1), "increasing"), ((8,), "increasing"),
                                         ((-1,), "increasing"), ((1.5,), "sequence")])
def test_intra_tiles_out_of_range_or_unsorted_are_refused(tiles, match):
    with pytest.raises(CorruptError, match=match):
        make_header(intra_tiles=tiles)


def test_intra_tiles_need_a_reference():
    with pytest.raises(CorruptError, match="temporal reference"):
        make_header(reference_id=None, intra_tiles=(0,))


@pytest.mark.parametrize("bitmap,match", [(0x00, "empty bitmap"), (0x80 | 0x02, None)])
def test_a_corrupt_intra_bitmap_is_refused(bitmap, match):
    from stcm.runtime.fields import ByteReader

    # 2 band groups x 1 tile (tile_size 8): the one bitmap byte has 6 padding bits.
    header = make_header(tile_size=8, intra_tiles=(1,))
    raw = bytearray(header.to_bytes())
    at = raw.index(header.reference_id) + len(header.reference_id)
    assert raw[at] == 0x02
    raw[at] = bitmap
    with pytest.raises(CorruptError, match=match or "past the last tile"):
        Header.from_reader(ByteReader(bytes(raw)))
    # The flag without a reference id: refused before the bitmap is read.
    no_ref = bytearray(make_header(reference_id=None).to_bytes())
    no_ref[0] |= 1 << 5
    with pytest.raises(CorruptError, match="without a reference"):
        Header.from_reader(ByteReader(bytes(no_ref)))


# -- reference grid (format 2.2) ---------------------------------------------------------------
def test_a_reference_grid_round_trips_and_moves_the_canvas():
    from stcm.runtime.header import ReferenceGrid

    grid = ReferenceGrid((5, 13), (1.0, 0.0, -16.0, 0.0, 1.0, 32.0))
    # 100x120 behind 5 rows and 13 columns: a 105x133 canvas -> 128x192 padded, latent 8x12.
    header = make_header(reference_grid=grid, intra_tiles=(0,))
    assert header.origin == (5, 13) and header.pad == (23, 59)
    assert header.latent_shape == (8, 12) and header.tiles == 6
    data = write_container(header, make_streams(header))
    assert read_container(data).header == header
    plain = make_header(intra_tiles=(0,))
    # The grid (2 + 6 * 8 bytes), and the bitmap of 12 tiles takes 2 bytes instead of 1.
    assert len(header.to_bytes()) == len(plain.to_bytes()) + 2 + 6 * 8 + 1
    assert plain.origin == (0, 0) and plain.reference_grid is None


@pytest.mark.parametrize("origin,mapping,match", [
    ((16, 0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "origin"),
    ((0, -1), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "origin"),
    ((0, 0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), "not canonical"),
    ((1, 0), (1.0, 0.0, float("nan"), 0.0, 1.0, 0.0), "finite"),
    ((0, 0), (1.0, 2.0, 0.0, 0.5, 1.0, 0.0), "singular"),
    ((0, 0), (17.0, 0.0, 0.0, 0.0, 1.0, 0.0), "scales"),
    ((0, 0), (1.0, 0.0, 1e12, 0.0, 1.0, 0.0), "origin beyond"),
    ((0, 0), (1.0, 0.0, 0.0), "6 numbers"),
])
def test_a_reference_grid_out_of_range_is_refused(origin, mapping, match):
    from stcm.runtime.header import ReferenceGrid

    with pytest.raises(CorruptError, match=match):
        ReferenceGrid(origin, mapping)


def test_a_corrupt_reference_grid_in_the_bytes_is_refused():
    from stcm.runtime.fields import ByteReader
    from stcm.runtime.header import ReferenceGrid

    header = make_header(reference_grid=ReferenceGrid((3, 0), (1.0, 0.0, 0.0, 0.0, 1.0, -3.0)))
    raw = bytearray(header.to_bytes())
    at = raw.index(header.reference_id) + len(header.reference_id)
    assert raw[at:at + 2] == b"\x03\x00"
    bad = bytearray(raw)
    bad[at] = 16  # the origin byte past 15
    with pytest.raises(CorruptError, match="origin"):
        Header.from_reader(ByteReader(bytes(bad)))
    bad = bytearray(raw)
    bad[at + 2:at + 10] = struct.pack("<d", float("inf"))
    with pytest.raises(CorruptError, match="finite"):
        Header.from_reader(ByteReader(bytes(bad)))
    with pytest.raises(TruncatedError):
        Header.from_reader(ByteReader(bytes(raw[:at + 20])))
    # The flag without a reference id: refused before the grid is read.
    no_ref = bytearray(make_header(reference_id=None).to_bytes())
    no_ref[0] |= 1 << 6
    with pytest.raises(CorruptError, match="without a reference"):
        Header.from_reader(ByteReader(bytes(no_ref)))
    with pytest.raises(CorruptError, match="temporal reference"):
        make_header(reference_id=None, reference_grid=ReferenceGrid((3, 0)))


# -- the mask of missing samples and the georef supplement (format 2.3) ------------------------
def _with_mask_field(header: Header, field: bytes) -> bytes:
    """``header``'s record (no mask) with flag bit 7 and ``field`` as its mask."""
    raw = bytearray(header.to_bytes())
    raw[0] |= 1 << 7
    return bytes(raw) + field


def test_a_mask_round_trips_and_decodes_to_the_planes():
    from stcm.runtime.mask import SampleMask

    h, w, bands = 100, 120, 5
    missing = np.zeros((bands, h, w), bool)
    missing[:, :30, :17] = True
    shared = SampleMask.from_array(missing)
    missing[3, 50, 60] = True  # one band differs: a plane per band
    per_band = SampleMask.from_array(missing)
    assert not shared.per_band and per_band.per_band
    assert SampleMask.from_array(np.zeros((bands, h, w), bool)) is None
    for mask in (shared, per_band):
        header = make_header(mask=mask)
        data = write_container(header, make_streams(header))
        assert data[4:6] == b"\x02\x03"
        back = read_container(data).header
        assert back == header and back.mask == mask
    np.testing.assert_array_equal(back.mask.to_array(h, w, bands), missing)
    assert len(shared.to_bytes()) < 40  # 1500 bytes of bit plane, deflated


_PLANE = 1488  # bytes of a 100 x 119 plane: 11900 bits, 4 of padding


@pytest.mark.parametrize("kind, payload, match", [
    (0, zlib.compress(bytes(_PLANE)), "no sample is missing"),
    (0, zlib.compress(b"\x01" * _PLANE), "padding"),
    (0, zlib.compress(b"\xf0" * (_PLANE - 1)), f"exactly {_PLANE} bytes"),
    (0, zlib.compress(b"\xf0" * (_PLANE + 1)), f"exactly {_PLANE} bytes"),
    (0, zlib.compress(b"\xf0" * _PLANE) + b"junk", f"exactly {_PLANE} bytes"),
    (0, b"not zlib at all", "valid zlib"),
    (2, zlib.compress(b"\xf0" * _PLANE), "unknown kind"),
    (1, zlib.compress(b"\xf0" * _PLANE * 5), "same plane"),
])
def test_a_corrupt_mask_is_refused(kind, payload, match):
    from stcm.runtime.fields import ByteReader

    header = make_header(height=100, width=119)
    raw = _with_mask_field(header, bytes([kind]) + _v(len(payload)) + payload)
    with pytest.raises(CorruptError, match=match):
        Header.from_reader(ByteReader(raw))


def test_a_zip_bomb_mask_inflates_no_further_than_its_image_needs():
    from stcm.runtime.fields import ByteReader

    header = make_header(height=1000, width=1000, bands=5)  # a plane: 125 000 bytes
    bomb = zlib.compress(b"\xff" * (256 << 20), 9)  # 256 MiB in ~250 kB
    raw = _with_mask_field(header, b"\x00" + _v(len(bomb)) + bomb)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptError, match="exactly 125000 bytes"):
            Header.from_reader(ByteReader(raw))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20
    # An image larger than the reader's limit is refused before its mask is inflated.
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        Header.from_reader(ByteReader(raw), max_pixels=10 ** 6)


def test_gcps_and_rpcs_round_trip_in_the_header():
    from stcm.runtime.georeference import ControlPoint

    rpcs = {k: 1.5 for k in ("height_off", "height_scale", "lat_off", "lat_scale", "line_off",
                             "line_scale", "long_off", "long_scale", "samp_off", "samp_scale")}
    rpcs.update({k: [0.25] * 20 for k in ("line_num_coeff", "line_den_coeff",
                                          "samp_num_coeff", "samp_den_coeff")})
    georef = Georeference(None, None, None, (ControlPoint(0, 0, 13.0, 52.0, 30.0, "a", "x"),
                                             ControlPoint(9.5, 3, 13.1, 51.9)),
                          "EPSG:4326", rpcs)
    for extra in ({}, {"note": 1}):
        header = make_header(georef=georef, extra=extra)
        back = read_container(write_container(header, make_streams(header))).header
        assert back == header and back.georef.gcps[1].row == 9.5 and back.extra == extra
    with pytest.raises(CorruptError, match="reserved"):
        make_header(extra={"georef": {}})
    with pytest.raises(CorruptError, match="rpcs"):
        Georeference(None, None, None, rpcs={**rpcs, "line_num_coeff": [1.0] * 19})
    with pytest.raises(CorruptError, match="only meaningful with GCPs"):
        Georeference(None, None, None, gcp_crs="EPSG:4326")


@pytest.mark.parametrize("extra, match", [
    ({"band_descriptions": ["a", "b"]}, "one value per band"),
    ({"band_descriptions": [None] * 5}, "at least one band"),
    ({"metadata": {"scales": [1, 2, 3, 4, "x"]}}, "finite numbers"),
    ({"metadata": {"tags": {"A": 1}}}, "strings"),
    ({"metadata": {"overviews": [4, 2]}}, "increasing"),
    ({"metadata": {"colour": []}}, "unknown keys"),
    ({"metadata": {"tags": {}}}, "not canonical"),
    ({"metadata": {}}, "non-empty"),
])
def test_metadata_in_extra_is_validated(extra, match):
    with pytest.raises(CorruptError, match=match):
        make_header(extra=extra)
