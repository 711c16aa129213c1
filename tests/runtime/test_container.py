"""The stcm container: round trips, and every kind of damaged or foreign input is refused.

Damaged files are made by editing real containers byte by byte; where a test needs a field to
be wrong *behind* a valid checksum (a crafted file), the helpers re-encode the metadata or the
stream table and recompute its CRC32.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from stcm.errors import (ContainerError, CorruptError, ModelMismatchError, NotStcmFileError,
                         TruncatedError, UnsupportedVersionError)
from stcm.runtime.container import (KIND_Y, KIND_Z, MAX_METADATA_BYTES, Container,
                                    Georeference, Header, StreamEntry, check_model,
                                    check_reference, num_tiles, peek_header, read_container,
                                    tile_grid, write_container)

MODEL = hashlib.sha256(b"model A").digest()
WKT = ('PROJCS["WGS 84 / UTM zone 33N",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",'
       '6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
       'PROJECTION["Transverse_Mercator"],PARAMETER["central_meridian",15],UNIT["metre",1],'
       'AUTHORITY["EPSG","32633"]]')
CONFIG = {"name": "tiny", "N": 24, "M": 32, "groups": (4, 4, 8, 16), "context": "diag",
          "lambdas": (0.002, 0.0058, 0.0166), "scale_min": 0.11, "temporal": True}


def make_header(**changes) -> Header:
    """5 bands (2 band groups), 100x120 -> padded 128x128, latent 8x8, 4x4 tiles: 2x2 grid."""
    args = dict(
        model_id=MODEL, config=CONFIG, height=100, width=120, bands=5, dtype="uint16",
        normalization={"dtype": "uint16", "lo": [200, 210, 190, 0, 5],
                       "hi": [9000, 8800.5, 9100, 65535, 7]},
        quality=0.75, tile_size=4,
        georef=Georeference(WKT, (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), float("nan")),
        reference_id=hashlib.sha256(b"the first image").digest(), extra={"note": "séries"})
    args.update(changes)
    return Header.for_image(**args)


def make_streams(header: Header, seed: int = 0, size: int = 40) -> dict:
    rng = np.random.default_rng(seed)
    return {key: rng.integers(0, 256, int(rng.integers(1, size)), dtype=np.uint8).tobytes()
            for key in header.stream_keys()}


@pytest.fixture(scope="module")
def sample():
    header = make_header()
    streams = make_streams(header)
    return header, streams, write_container(header, streams)


def _meta_span(data: bytes) -> tuple[int, int]:
    (length,) = struct.unpack_from("<I", data, 40)
    return 44, 44 + length


def rebuild(data: bytes, edit_meta=None, *, minor: int | None = None, flags: int | None = None,
            raw_meta: bytes | None = None) -> bytes:
    """Re-encodes the header with edited metadata/version/flags and a valid CRC32."""
    start, end = _meta_span(data)
    fixed = bytearray(data[:40])
    if minor is not None:
        fixed[5] = minor
    if flags is not None:
        struct.pack_into("<H", fixed, 6, flags)
    meta = json.loads(data[start:end])
    if edit_meta is not None:
        edit_meta(meta)
    if raw_meta is None:
        raw_meta = json.dumps(meta, sort_keys=True, separators=(",", ":"),
                              ensure_ascii=False).encode()
    head = bytes(fixed) + struct.pack("<I", len(raw_meta)) + raw_meta
    return head + struct.pack("<I", zlib.crc32(head)) + data[end + 4:]


def retable(data: bytes, edit_rows) -> bytes:
    """Rewrites the stream table (list of 7-tuples) with a valid CRC32; payload unchanged."""
    _, end = _meta_span(data)
    pos = end + 4
    (count,) = struct.unpack_from("<I", data, pos)
    rows = [list(r) for r in struct.iter_unpack("<HBBIQII", data[pos + 4:pos + 4 + 24 * count])]
    edit_rows(rows)
    table = struct.pack("<I", count) + b"".join(struct.pack("<HBBIQII", *r) for r in rows)
    return data[:pos] + table + struct.pack("<I", zlib.crc32(table)) + data[pos + 8 + 24 * count:]


# -- round trip ------------------------------------------------------------------------------

def test_round_trip(sample):
    header, streams, data = sample
    c = read_container(data)
    assert c.header == header
    assert c.header.config["groups"] == [4, 4, 8, 16]  # stored as JSON: tuples become lists
    assert math.isnan(c.header.georef.nodata) and c.header.georef.crs_wkt == WKT
    assert c.header.georef.transform == (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    assert c.header.reference_id == header.reference_id and c.header.extra == {"note": "séries"}
    assert c.header.normalization["hi"] == [9000.0, 8800.5, 9100.0, 65535.0, 7.0]
    assert (c.header.pad, c.header.latent_shape, c.header.z_shape) == ((28, 8), (8, 8), (2, 2))
    assert c.header.band_groups == 2 and c.header.tiles == 4 and len(c.entries) == 2 * (1 + 4)
    for key, chunk in streams.items():
        assert c.stream(*key) == chunk
    c.verify()
    # Laid out in sorted key order, back to back, right after the table.
    keys = [e.key for e in c.entries]
    assert keys == sorted(streams) and all(isinstance(e, StreamEntry) for e in c.entries)
    assert [e.offset for e in c.entries] == list(np.cumsum([0] + [e.length for e in
                                                               c.entries])[:-1])
    assert len(data) == c.payload_start + sum(len(s) for s in streams.values())
    assert c.bits_per_pixel == pytest.approx(8 * len(data) / (100 * 120))
    assert c.container_id == hashlib.sha256(data).digest()
    assert peek_header(data) == header
    assert write_container(header, streams) == data  # deterministic


def test_metadata_is_canonical_json(sample):
    _, _, data = sample
    start, end = _meta_span(data)
    text = data[start:end].decode("utf-8")
    meta = json.loads(text)
    assert text == json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert meta["georef"]["nodata"] == "nan" and meta["reference_id"] == make_header(
    ).reference_id.hex()
    assert data[:4] == b"STCM" and data[4:6] == b"\x01\x00"
    assert struct.unpack_from("<H", data, 6)[0] == 0b11 and data[8:40] == MODEL


def test_minimal_header_and_special_nodata():
    for nodata, text in ((float("inf"), "inf"), (float("-inf"), "-inf"), (np.float32(0), 0.0)):
        header = make_header(georef=Georeference(None, None, nodata), reference_id=None,
                             height=64, width=64, bands=1, tile_size=4096, extra={},
                             normalization={"dtype": "uint16", "lo": [0], "hi": [1]})
        data = write_container(header, make_streams(header))
        c = read_container(data)
        assert c.header == header and c.header.reference_id is None
        assert json.loads(data[slice(*_meta_span(data))])["georef"]["nodata"] == text
        assert struct.unpack_from("<H", data, 6)[0] == 0b01
    header = make_header(georef=None, reference_id=None)
    c = read_container(write_container(header, make_streams(header)))
    assert c.header.georef is None and c.header.flags == 0


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
    for major in (2, 255, 0):
        future = bytearray(data)
        future[4] = major
        with pytest.raises(UnsupportedVersionError, match=f"version {major}.0"):
            read_container(bytes(future))
        with pytest.raises(UnsupportedVersionError):
            read_container(bytes(future[:5]))  # checked before anything else

    def add(meta):
        meta["future_field"] = {"x": 1}
        meta["georef"]["future_key"] = 2

    newer = rebuild(data, add, minor=7)
    assert read_container(newer).header == read_container(data).header  # ignored
    with pytest.raises(CorruptError, match="unknown fields"):
        read_container(rebuild(data, add, minor=0))


def test_flags(sample):
    _, _, data = sample
    with pytest.raises(CorruptError, match="flag"):
        read_container(rebuild(data, flags=0b111))
    with pytest.raises(CorruptError, match="georef"):
        read_container(rebuild(data, flags=0b10))
    with pytest.raises(CorruptError, match="reference_id"):
        read_container(rebuild(data, lambda m: m.pop("reference_id")))


def _set(key, value):
    def edit(meta):
        meta[key] = value
    return edit


@pytest.mark.parametrize("edit, field", [
    (_set("height", "100"), "height"), (_set("height", True), "height"),
    (_set("height", 0), "height"), (_set("height", 101), "pad"),
    (_set("width", 100.0), "width"), (_set("bands", 7), "normalization"),
    (_set("bands", 70000), "bands"), (_set("band_groups", 3), "band_groups"),
    (_set("dtype", "int8"), "dtype"), (_set("dtype", "uint8"), "normalization"),
    (_set("quality", 1.5), "quality"), (_set("quality", "0.5"), "quality"),
    (_set("pad", [28, 8, 0]), "pad"), (_set("pad", [92, 8]), "pad"),
    (_set("latent_shape", [8, 9]), "latent_shape"), (_set("latent_shape", 8), "latent_shape"),
    (_set("z_shape", [1, 2]), "z_shape"), (_set("tile_size", 0), "tile_size"),
    (_set("tile_size", 4097), "tile_size"), (_set("config", [1, 2]), "config"),
    (_set("extra", "x"), "extra"), (_set("normalization", {"dtype": "uint16"}), "normalization"),
    (lambda m: m["normalization"]["lo"].pop(), "normalization"),
    (lambda m: m["normalization"]["hi"].__setitem__(0, 100), "normalization"),
    (lambda m: m["normalization"]["lo"].__setitem__(1, "a"), "normalization"),
    (_set("reference_id", "00" * 31), "reference_id"),
    (_set("reference_id", "zz" * 32), "reference_id"),
    (lambda m: m["georef"].__setitem__("nodata", "NaN!"), "georef.nodata"),
    (lambda m: m["georef"].__setitem__("transform", [1, 2, 3]), "georef.transform"),
    (lambda m: m["georef"].__setitem__("crs_wkt", 5), "georef.crs_wkt"),
    (lambda m: m["georef"].pop("crs_wkt"), "georef"), (_set("georef", []), "georef"),
    (lambda m: m.pop("quality"), "missing fields"),
])
def test_bad_field_behind_a_valid_checksum(sample, edit, field):
    _, _, data = sample
    with pytest.raises(CorruptError, match=f"'{field}'" if "missing" not in field else field):
        read_container(rebuild(data, edit))


@pytest.mark.parametrize("raw, match", [
    (b"[1]", "JSON object"), (b"\xff\xfe", "UTF-8"), (b"{", "JSON"),
    (b'{"a":1,"a":2}', "duplicate"), (b'{"quality":NaN}', "NaN"),
    (b"[" * 200_000 + b"]" * 200_000, "JSON"), (b'{"x":' + b"9" * 5000 + b"}", "JSON"),
])
def test_bad_json(sample, raw, match):
    _, _, data = sample
    with pytest.raises(CorruptError, match=match):
        read_container(rebuild(data, raw_meta=raw))


def test_absurd_sizes_are_refused_without_allocating(sample):
    _, _, data = sample

    def huge(meta):  # consistent in itself: only the size is absurd
        meta.update(height=10 ** 9, width=10 ** 9, pad=[0, 0], latent_shape=[62_500_000] * 2,
                    z_shape=[15_625_000] * 2, tile_size=4096)

    crafted = rebuild(data, huge)
    tracemalloc.start()
    try:
        for read in (read_container, peek_header):
            with pytest.raises(CorruptError, match="max_pixels"):
                read(crafted)
        # Allowed by a caller, the stream count claimed by the header is then compared with
        # the table, still without building anything of the claimed size.
        with pytest.raises(CorruptError, match="streams"):
            read_container(crafted, max_pixels=10 ** 30)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
    with pytest.raises(CorruptError, match="max_pixels"):
        read_container(data, max_pixels=100 * 120 * 5 - 1)


def test_metadata_size_limit(sample):
    header, streams, data = sample
    with pytest.raises(CorruptError, match="metadata"):
        write_container(make_header(extra={"x": "a" * MAX_METADATA_BYTES}), streams)
    claimed = bytearray(data)
    struct.pack_into("<I", claimed, 40, MAX_METADATA_BYTES + 1)
    with pytest.raises(CorruptError, match="exceeds"):
        read_container(bytes(claimed))
    with pytest.raises(CorruptError, match="exceeds"):
        read_container(bytes(claimed) + bytes(MAX_METADATA_BYTES + 8))


@pytest.mark.parametrize("edit, match", [
    (lambda rows: rows.__setitem__(slice(0, 2), rows[1::-1]), "expected"),
    (lambda rows: rows[1].__setitem__(3, 9), "expected"),
    (lambda rows: rows[2].__setitem__(2, 1), "reserved"),
    (lambda rows: rows[3].__setitem__(4, rows[3][4] - 1), "overlaps"),
    (lambda rows: rows[3].__setitem__(4, rows[3][4] + 1), "unused"),
    (lambda rows: rows[-1].__setitem__(5, rows[-1][5] - 1), "trailing"),
    (lambda rows: rows[-1].__setitem__(4, 2 ** 63), "unused"),
])
def test_bad_stream_table_behind_a_valid_checksum(sample, edit, match):
    _, _, data = sample
    with pytest.raises(CorruptError, match=match):
        read_container(retable(data, edit))


def test_stream_count_mismatch(sample):
    _, _, data = sample
    damaged = bytearray(data)
    struct.pack_into("<I", damaged, _meta_span(data)[1] + 4, 11)
    with pytest.raises(CorruptError, match="11 streams"):
        read_container(bytes(damaged))


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
    with pytest.raises(CorruptError, match="normalization"):
        make_header(normalization={"dtype": "uint16", "lo": [0] * 5,
                                   "hi": [1, 1, 1, 1, float("inf")]})
    with pytest.raises(CorruptError, match="config"):
        make_header(config={"x": float("nan")})
    with pytest.raises(CorruptError, match="quality"):
        make_header(quality=float("nan"))
    with pytest.raises(CorruptError, match="latent_shape"):
        Header(**{**make_header().__dict__, "latent_shape": (4, 4)})


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
    first_id = read_container(first).container_id
    later_header = make_header(reference_id=first_id)
    later = read_container(write_container(later_header, make_streams(later_header, 2)))
    check_reference(later, first)
    with pytest.raises(ModelMismatchError):
        check_reference(later, None)
    with pytest.raises(ModelMismatchError):
        check_reference(later, first + b"x")
    check_reference(read_container(first), None)
    with pytest.raises(ModelMismatchError):
        check_reference(read_container(first), first)


def test_container_is_plain_data(sample):
    _, _, data = sample
    c = read_container(bytearray(data))
    assert isinstance(c, Container) and isinstance(c.data, bytes)
    assert read_container(memoryview(data)).header == c.header
