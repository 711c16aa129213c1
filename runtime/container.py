"""The stcm container: the versioned binary file that holds one compressed image.

A container is a magic and version, one checksummed record (the per-image header of
``runtime.header``, from format 2.4 followed by a checksum of each stream's decoded symbols,
and a table of streams: one length and CRC32 per stream), and the streams: per band group
one stream for the hyper latent z and one per latent tile of y. Every stream carries its own
CRC32, so one tile can be located and checked without touching the others; its symbol
checksum lets the decoder verify what the stream decodes to. ``docs/format.md`` gives the
layout byte by byte.

Reading trusts nothing: the record's CRC32 is checked before any field is interpreted, every
length is compared with the bytes actually present, every field is type- and range-checked
before anything proportional to a claimed size is allocated, and each failure is a
``ContainerError`` subclass that says what is wrong. This module must not import torch: it
is the one part of the runtime that tools which only inspect files (``stcm info``) need.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
import operator
from dataclasses import dataclass

from stcm.errors import (CorruptError, ModelMismatchError,
                         NotStcmFileError, TruncatedError, UnsupportedVersionError)
from stcm.runtime.fields import ByteReader, write_varint
from stcm.runtime.georeference import Georeference
from stcm.runtime.header import (BAND_GROUP_SIZE, DEFAULT_MAX_PIXELS, DOWNSAMPLE, DTYPES,
                                 KIND_Y, KIND_Z, MAX_TILE_SIZE, MODEL_ID_BYTES, PAD_MULTIPLE,
                                 Header, num_tiles, quality_on_grid, tile_grid)

__all__ = [
    "MAGIC", "FORMAT_MAJOR", "FORMAT_MINOR", "FORMAT_VERSION", "READ_MAJORS",
    "MAX_RECORD_BYTES", "DEFAULT_MAX_PIXELS",
    "KIND_Z", "KIND_Y", "DTYPES", "MODEL_ID_BYTES", "Georeference", "Header", "StreamEntry",
    "Container", "CHECKSUM_VERSION", "FOOTPRINT_VERSION", "tile_grid", "num_tiles",
    "quality_on_grid",
    "write_container",
    "read_container", "peek_header", "check_model", "check_reference", "short_id",
    "BAND_GROUP_SIZE", "DOWNSAMPLE", "PAD_MULTIPLE", "MAX_TILE_SIZE",
]

MAGIC = b"STCM"
# 2: compact binary header, 16-byte ids, stream table of (length, CRC32); the quality rule of
# format 2 keeps enc * dec on the interpolation of the level products (models/gain.py).
# 2.1: flag bit 5, the per-tile mode bitmap; 2.2: bit 6, the reference grid; 2.3: bit 7, the
# mask of missing samples; 2.4: the symbol checksum table after the header's last field.
# 3: 2.4's layout, but the y streams hold no symbol for the latent cells away from the image
# (``Header.footprint``): a 2.x reader would decode other symbols from them, so a new major.
# 3.1: shifted reference grids (bit 7 of the grid's top byte, which 3.0 readers refuse).
FORMAT_MAJOR, FORMAT_MINOR = 3, 1
FORMAT_VERSION = (FORMAT_MAJOR, FORMAT_MINOR)
READ_MAJORS = (2, 3)  # what this reader decodes (format 1 only stcm 0.2 does)
CHECKSUM_VERSION = (2, 4)  # the first with symbol checksums
FOOTPRINT_VERSION = (3, 0)  # the first that codes no y symbol away from the image
SHIFTED_GRID_VERSION = (3, 1)  # the first with shifted reference grids (latent shift tables)
_NO_CHECKSUM_VERSION = (2, 3)  # what write_container writes without them (2.3's layout)
# The newest minor of each major this reader knows: bytes after the last field it knows are
# corruption in a file of these or older, skipped in a newer minor's.
_KNOWN_MINOR = {2: 4, 3: FORMAT_MINOR}
MAX_RECORD_BYTES = 1 << 31
_MIN_ENTRY_BYTES = 5  # a varint length (>= 1 byte) and a CRC32

_U32 = struct.Struct("<I")
_KIND_NAMES = {KIND_Z: "z", KIND_Y: "y"}

# Signatures of formats users are likely to pass by mistake; named in the error message.
_FOREIGN = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
    (b"II+\x00", "a BigTIFF image"), (b"MM\x00+", "a BigTIFF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 image"),
    (b"\xffO\xffQ", "a JPEG 2000 codestream"), (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"CDF\x01", "a NetCDF file"), (b"CDF\x02", "a NetCDF file"),
    (b"\x93NUMPY", "a NumPy .npy file"), (b"PK\x03\x04", "a ZIP archive (or .npz)"),
    (b"\x1f\x8b", "a gzip file"), (b"BM", "a BMP image"), (b"GIF8", "a GIF image"),
)


def short_id(digest: bytes) -> bytes:
    """The id a container stores for a sha256 digest (model or reference): its first 16 bytes."""
    if not isinstance(digest, (bytes, bytearray)) or len(digest) not in (MODEL_ID_BYTES, 32):
        raise ValueError(f"expected a sha256 digest (32 bytes), got {digest!r:.80}")
    return bytes(digest[:MODEL_ID_BYTES])


def _hex(digest: bytes) -> str:
    return digest.hex()[:12]


def _crc(data: bytes | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class StreamEntry:
    """One row of the stream table.

    Attributes:
        band_group: Band group index, 0..band_groups-1.
        kind: ``KIND_Z`` (0, the hyper latent; tile is 0) or ``KIND_Y`` (1, one latent tile).
        tile: Tile index in raster order (see ``tile_grid``).
        offset: Byte offset of the stream from the start of the payload (the sum of the
            lengths before it; not stored).
        length: Stream length in bytes.
        crc32: CRC32 of the stream's bytes.
    """

    band_group: int
    kind: int
    tile: int
    offset: int
    length: int
    crc32: int

    @property
    def key(self) -> tuple[int, int, int]:
        return self.band_group, self.kind, self.tile


def _describe(key: tuple[int, int, int]) -> str:
    g, kind, tile = key
    return f"band group {g}, {_KIND_NAMES.get(kind, kind)} stream, tile {tile}"


@dataclass(frozen=True)
class Container:
    """A read container: its validated header, stream table and the whole file's bytes.

    Build it with ``read_container``, which checks everything but the streams' own CRC32s;
    ``stream`` checks those one at a time.

    Attributes:
        header: The image header.
        entries: The stream table, in (band_group, kind, tile) order.
        data: The whole container.
        payload_start: Offset of the first stream in ``data``.
        checksums: Per stream, in table order, the ``runtime.ans.symbol_checksum`` of its
            decoded symbols (format 2.4 on); None for files of an older minor, which have none.
        version: (major, minor) of the file's format.
    """

    header: Header
    entries: tuple[StreamEntry, ...]
    data: bytes
    payload_start: int
    checksums: tuple[int, ...] | None = None
    version: tuple[int, int] = FORMAT_VERSION  # (major, minor)

    @property
    def coded_box(self) -> tuple[int, int, int, int] | None:
        """The latent box (row0, col0, rows, cols) whose positions have y symbols in the
        streams: the image's footprint from format 3.0 on (positions over replicated padding
        only decode to their predicted mean, ``Header.footprint``); None before 3.0: all."""
        return self.header.footprint if self.version >= FOOTPRINT_VERSION else None

    def checksum(self, band_group: int, kind: int, tile: int) -> int | None:
        """The symbol checksum of one stream, for its decoder to verify; None when the file
        (older than format 2.4) has none.

        Raises:
            KeyError: The container has no such stream.
        """
        index = self.header.stream_index(band_group, kind, tile)
        return None if self.checksums is None else self.checksums[index]

    def stream(self, band_group: int, kind: int, tile: int) -> bytes:
        """Returns one stream after checking its CRC32.

        Raises:
            KeyError: The container has no such stream.
            CorruptError: The stream's bytes do not match its CRC32; names the stream.
        """
        entry = self.entries[self.header.stream_index(band_group, kind, tile)]
        start = self.payload_start + entry.offset
        chunk = self.data[start:start + entry.length]
        crc = _crc(chunk)
        if crc != entry.crc32:
            raise CorruptError(f"corrupt stcm stream ({_describe(entry.key)}): CRC32 is "
                               f"{crc:#010x}, the stream table says {entry.crc32:#010x}")
        return chunk

    def verify(self) -> None:
        """Checks every stream's CRC32.

        Raises:
            CorruptError: For the first stream that does not match.
        """
        for entry in self.entries:
            self.stream(*entry.key)

    @property
    def bits_per_pixel(self) -> float:
        """Whole-file size in bits per image pixel (all bands together)."""
        return 8 * len(self.data) / (self.header.height * self.header.width)

    @property
    def header_bytes(self) -> int:
        """Bytes of everything but the streams: magic, version, header, table, CRC32."""
        return self.payload_start

    @property
    def container_id(self) -> bytes:
        """sha256 of the whole container; later images of a series store its first 16 bytes
        as reference_id."""
        return hashlib.sha256(self.data).digest()


def write_container(header: Header, streams: dict[tuple[int, int, int], bytes],
                    checksums: dict[tuple[int, int, int], int] | None = None) -> bytes:
    """Serialises a header and its streams into a container.

    Args:
        header: The image header.
        streams: Bytes per (band_group, kind, tile): for every band group, one z stream
            (``KIND_Z``, tile 0) and one y stream (``KIND_Y``) per tile, nothing else.
        checksums: The ``runtime.ans.symbol_checksum`` of each stream's symbols, for the
            same keys: written as format 2.4's checksum table (what the codec writes). None
            writes a container without one, in format 2.3's layout (for streams whose
            symbols are not at hand); decoders then cannot verify the symbols.

    Returns:
        The container; streams are laid out in key order.

    Raises:
        CorruptError: A stream is missing, unexpected, not bytes or longer than 4 GiB - 1,
            or the checksums are not one u32 per stream. (An invalid header cannot be
            constructed.)

    >>> h = Header(model_id=bytes(16), height=64, width=64, bands=1, dtype="uint8",
    ...            normalization={"dtype": "uint8", "lo": [0], "hi": [255]},
    ...            quality=0.75, tile_size=4)
    >>> streams = {(0, KIND_Z, 0): b"zz", (0, KIND_Y, 0): b"yyy"}
    >>> data = write_container(h, streams, {(0, KIND_Z, 0): 7, (0, KIND_Y, 0): 0xFFFFFFFF})
    >>> c = read_container(data)
    >>> c.header == h, c.stream(0, KIND_Y, 0), len(data) - c.payload_start, c.header_bytes
    (True, b'yyy', 5, 54)
    >>> c.checksum(0, KIND_Y, 0), data[4:6], read_container(write_container(h, streams)).checksums
    (4294967295, b'\\x03\\x01', None)
    """
    if not isinstance(header, Header):
        raise TypeError(f"header must be a Header, got {type(header).__name__}")
    if not isinstance(streams, dict):
        raise TypeError(f"streams must be a dict of (band_group, kind, tile) -> bytes, got "
                        f"{type(streams).__name__}")
    for key, value in streams.items():
        try:
            header.stream_index(*key)
        except (KeyError, TypeError):
            raise CorruptError(f"cannot write stcm container: unexpected stream key {key!r}; "
                               f"expected (band_group, kind, tile) with band groups "
                               f"0..{header.band_groups - 1}, kind 0 (tile 0) or 1 (tiles "
                               f"0..{header.tiles - 1})") from None
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise CorruptError(f"cannot write stcm container: stream {key} is "
                               f"{type(value).__name__}, not bytes")
        if len(value) > 0xFFFFFFFF:
            raise CorruptError(f"cannot write stcm container: stream {key} has {len(value)} "
                               "bytes, more than a stream may hold (4 GiB - 1)")
    if len(streams) != header.num_streams:
        # Every key is valid and distinct, so some expected key is missing; the first few
        # are found within len(streams) + 5 expected keys.
        missing = []
        for key in header.stream_keys():
            if key not in streams:
                missing.append(key)
                if len(missing) == 5:
                    break
        raise CorruptError(f"cannot write stcm container: expected {header.num_streams} streams "
                           f"({header.band_groups} band groups x (1 z + {header.tiles} y tiles)), "
                           f"got {len(streams)}; missing {missing}")
    head = header.to_bytes()
    version = FORMAT_VERSION
    if checksums is None:
        version = _NO_CHECKSUM_VERSION
    else:
        head += _checksum_table(header, checksums)
    record = bytearray(write_varint(len(head)) + head)
    for key in header.stream_keys():
        chunk = streams[key]
        record += write_varint(len(chunk)) + _U32.pack(_crc(chunk))
    if len(record) > MAX_RECORD_BYTES:
        raise CorruptError(f"cannot write stcm container: header and stream table take "
                           f"{len(record)} bytes, more than {MAX_RECORD_BYTES}")
    prefix = MAGIC + bytes(version) + write_varint(len(record)) + record
    parts = [prefix, _U32.pack(_crc(prefix))]
    parts += [bytes(streams[key]) for key in header.stream_keys()]
    return b"".join(parts)


def _checksum_table(header: Header, checksums) -> bytes:
    """The symbol checksum table: one u32 per stream, in stream table order."""
    if not isinstance(checksums, dict) or len(checksums) != header.num_streams:
        raise CorruptError(f"cannot write stcm container: checksums must be a dict of one u32 "
                           f"per stream ({header.num_streams}), got "
                           f"{len(checksums) if isinstance(checksums, dict) else checksums!r}")
    out = bytearray()
    for key in header.stream_keys():
        value = checksums.get(key)
        try:
            number = None if isinstance(value, bool) else operator.index(value)
        except TypeError:
            number = None
        if number is None or not 0 <= number <= 0xFFFFFFFF:
            raise CorruptError(f"cannot write stcm container: the checksum of stream {key} "
                               f"must be a u32, got {value!r}")
        out += _U32.pack(number)
    return bytes(out)


def _read_checksums(fields: ByteReader, header: Header,
                    version: tuple[int, int]) -> tuple[int, ...] | None:
    """Reads the symbol checksum table that ends a 2.4 or later header (none before 2.4),
    checking that its size matches the streams the header implies before reading any."""
    if version < CHECKSUM_VERSION:
        return None
    need = 4 * header.num_streams
    if fields.remaining < need or (fields.remaining > need and not _newer(version)):
        raise CorruptError(f"corrupt stcm header: the symbol checksum table has "
                           f"{fields.remaining} bytes, but the header's {header.num_streams} "
                           f"streams ({header.band_groups} band groups x (1 z + "
                           f"{header.tiles} y tiles)) need {need}")
    return struct.unpack(f"<{header.num_streams}I", fields.take(need, "symbol checksums"))


def _check_magic(data: bytes) -> None:
    if not data:
        raise NotStcmFileError("not an stcm file: the input is empty")
    if data[:4] == MAGIC:
        return
    if MAGIC.startswith(data):
        raise TruncatedError(f"truncated stcm file: expected at least 7 bytes, got {len(data)}")
    kind = next((name for sig, name in _FOREIGN if data.startswith(sig)), None)
    if kind is None:
        stripped = data[:64].lstrip()
        if stripped[:1] in (b"{", b"["):
            kind = "JSON text"
        elif len(data) >= 9 and data[8:9] == b"{":
            kind = "a safetensors file (a model checkpoint?)"
        elif data[8:12] == b"WEBP" and data[:4] == b"RIFF":
            kind = "a WebP image"
    what = f"it looks like {kind}" if kind else f"it starts with {data[:8]!r}"
    raise NotStcmFileError(f"not an stcm file (no {MAGIC!r} magic): {what}")


def _check_version(data: bytes) -> int:
    if len(data) < 6:
        raise TruncatedError(f"truncated stcm file: expected at least 7 bytes, got {len(data)}")
    major, minor = data[4], data[5]
    if major == 1:
        raise UnsupportedVersionError(
            f"stcm format version 1.{minor} (written by stcm 0.2) is not supported: format 2 "
            "changed the header and how qualities between trained levels are decoded, so "
            "version 1 streams decode only with stcm 0.2 (pip install 'stcm==0.2.*')")
    if major not in READ_MAJORS:
        raise UnsupportedVersionError(
            f"stcm format version {major}.{minor} is not supported: this stcm reads versions "
            + " and ".join(f"{m}.x" for m in READ_MAJORS)
            + ("; upgrade stcm" if major > FORMAT_MAJOR else ""))
    return major, minor


def _newer(version: tuple[int, int]) -> bool:
    """A minor newer than this reader knows of its major (which may append header fields)."""
    return version[1] > _KNOWN_MINOR[version[0]]


def _read_record(data: bytes, max_pixels: int):
    """Checks magic, version and the record's CRC32, then parses the header and its symbol
    checksums. Returns the header, the checksums (None before 2.4), a reader positioned at
    the stream table, the payload start and the file's (major, minor)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected the container's bytes, got {type(data).__name__}")
    data = bytes(data)
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    _check_magic(data)
    version = _check_version(data)
    outer = ByteReader(data, 6, what="stcm file")
    try:
        record_len = outer.varint("record length", MAX_RECORD_BYTES)
    except TruncatedError:
        raise TruncatedError(f"truncated stcm file: the record length runs past the end, got "
                             f"{len(data)} bytes") from None
    record_start = outer.pos
    crc_at = record_start + record_len
    if len(data) < crc_at + 4:
        raise TruncatedError(f"truncated stcm file: expected at least {crc_at + 4} bytes for "
                             f"the header and stream table, got {len(data)}")
    (stored,) = _U32.unpack_from(data, crc_at)
    actual = _crc(memoryview(data)[:crc_at])
    if stored != actual:
        raise CorruptError(f"corrupt stcm header: CRC32 is {actual:#010x}, the file says "
                           f"{stored:#010x}")
    record = ByteReader(data, record_start, crc_at, what="stcm header")
    header_len = record.varint("header length", record.remaining)
    fields = ByteReader(data, record.pos, record.pos + header_len, what="stcm header")
    header = Header.from_reader(fields, max_pixels)
    grid = header.reference_grid
    if grid is not None and grid.shifted and version < SHIFTED_GRID_VERSION:
        raise CorruptError(f"corrupt stcm header: a shifted reference grid (format 3.1) in a "
                           f"version {version[0]}.{version[1]} file")
    checksums = _read_checksums(fields, header, version)
    if fields.remaining and not _newer(version):  # a newer minor may append fields
        raise CorruptError(f"corrupt stcm header: {fields.remaining} bytes after the last "
                           f"field in a version {version[0]}.{version[1]} file")
    record.pos = fields.end
    return header, checksums, record, crc_at + 4, version


def peek_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Reads and validates the header; ``data`` may stop after the stream table.

    Raises:
        ContainerError: As ``read_container``, for the header part.

    >>> h = Header(model_id=bytes(16), height=64, width=64, bands=1, dtype="uint8",
    ...            normalization={"dtype": "uint8", "lo": [0], "hi": [255]}, quality=1.0,
    ...            tile_size=4)
    >>> data = write_container(h, {(0, KIND_Z, 0): b"zzzz", (0, KIND_Y, 0): b"yyyyyy"})
    >>> peek_header(data[:-10]).height  # the streams need not be there
    64
    """
    return _read_record(data, max_pixels)[0]


def read_container(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Container:
    """Parses and validates a container (all but the streams' own CRC32s; see ``stream``).

    Args:
        data: The whole container.
        max_pixels: Refuse images of more than this many values (height * width * bands),
            before anything of that size is allocated.

    Raises:
        NotStcmFileError: Empty input or no ``STCM`` magic (names common other formats).
        UnsupportedVersionError: A format major version other than 2 or 3.
        TruncatedError: The data ends early; says how many bytes were expected and present.
        CorruptError: A checksum, length, field or stream table entry is wrong, or bytes
            follow the last stream.
        ImageTooLargeError: The image has more values than ``max_pixels``.

    >>> read_container(b"\\x89PNG\\r\\n\\x1a\\n....")
    Traceback (most recent call last):
    ...
    stcm.errors.NotStcmFileError: not an stcm file (no b'STCM' magic): it looks like a PNG image
    """
    if isinstance(data, (bytearray, memoryview)):
        data = bytes(data)
    header, checksums, table, payload_start, version = _read_record(data, max_pixels)
    count = header.num_streams
    if count * _MIN_ENTRY_BYTES > table.remaining:
        raise CorruptError(f"corrupt stcm stream table: the header needs {count} streams "
                           f"({header.band_groups} band groups x (1 z + {header.tiles} y "
                           f"tiles)), at least {count * _MIN_ENTRY_BYTES} bytes, but the table "
                           f"has {table.remaining}")
    # count is now bounded by the bytes present, so this loop is proportional to them.
    entries = []
    offset = 0
    for group, kind, tile in header.stream_keys():
        length = table.varint(f"stream length ({_describe((group, kind, tile))})", 0xFFFFFFFF)
        (crc,) = _U32.unpack(table.take(4, "stream CRC32"))
        entries.append(StreamEntry(group, kind, tile, offset, length, crc))
        offset += length
    if table.remaining:
        raise CorruptError(f"corrupt stcm stream table: {table.remaining} bytes after the "
                           f"last of its {count} entries")
    payload_len = len(data) - payload_start
    if offset > payload_len:
        raise TruncatedError(f"truncated stcm file: expected {payload_start + offset} bytes, "
                             f"got {len(data)}")
    if offset < payload_len:
        raise CorruptError(f"corrupt stcm file: {payload_len - offset} bytes of trailing garbage "
                           f"after the last stream (expected {payload_start + offset} bytes, "
                           f"got {len(data)})")
    return Container(header=header, entries=tuple(entries), data=data,
                     payload_start=payload_start, checksums=checksums, version=version)


def check_model(container: Container, model_id: bytes) -> None:
    """Checks that a container was written by the model with id ``model_id`` (its sha256).

    Raises:
        ModelMismatchError: It was written by another model.

    >>> h = Header(model_id=b"\\x01" * 16, height=64, width=64, bands=1, dtype="uint8",
    ...            normalization={"dtype": "uint8", "lo": [0], "hi": [255]}, quality=1.0,
    ...            tile_size=4)
    >>> c = read_container(write_container(h, {(0, KIND_Z, 0): b"", (0, KIND_Y, 0): b""}))
    >>> check_model(c, b"\\x02" * 32)
    Traceback (most recent call last):
    ...
    stcm.errors.ModelMismatchError: the file was written by model 010101010101 but ...
    """
    if container.header.model_id != short_id(model_id):
        raise ModelMismatchError(f"the file was written by model "
                                 f"{_hex(container.header.model_id)} but the codec has "
                                 f"{_hex(bytes(model_id))}; use the same model/engine")


def check_reference(container: Container, reference: bytes | None) -> None:
    """Checks that ``reference`` (a whole container) is the one ``container`` was coded against.

    Args:
        container: An image of a series.
        reference: The container of its reference image, or None when none is at hand.

    Raises:
        ModelMismatchError: The image needs a reference and none or another one was given.
            A reference given for an image coded alone is not used: ``temporal="auto"``
            writes such an image whenever the reference would not save a byte, so any image
            of a series decodes with its series' reference.
    """
    wanted = container.header.reference_id
    if wanted is None:
        return
    if reference is None:
        raise ModelMismatchError(f"this image was coded against reference {_hex(wanted)}; "
                                 "give that container as the reference")
    got = short_id(hashlib.sha256(reference).digest())
    if got != wanted:
        raise ModelMismatchError(f"the given reference is container {_hex(got)}, but this "
                                 f"image was coded against {_hex(wanted)}")
