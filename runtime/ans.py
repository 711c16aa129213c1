"""Entropy coding of the latents with constriction's ANS coder (a stack: last in, first out).

The latent y is coded step by step in the order the decoder reconstructs it: each step's
symbols ``s = round(y - mean)`` use a zero-mean quantized Gaussian whose std is a value of a
fixed, pinned scale table (``pinned_scale_table``), picked by ``ScaleQuantizer``. The hyper
latent z uses one probability table per channel (``FactorizedCoder``). The coder only ever
sees table values, so encoder and decoder agree bit for bit as long as they see the same
float32 scales.

Escapes. No symbol is ever clipped. The Gaussian model covers ``[-bound, bound]``; its two end
symbols are escape markers: a symbol with ``|s| >= bound`` is coded as the marker of its sign
followed by the payload ``v = |s| - bound``. A factorized row gets one extra entry below and
one above its real symbols; the payload is the distance beyond the table, minus one. A payload
``v`` (``0 <= v < 2**32``) is coded as its bit length ``nb`` with a uniform over ``0..32``,
then the ``nb - 1`` bits below its leading one in chunks of at most 16 bits, least
significant chunk first, each with a uniform over ``2**size`` values. Any int32 symbol round
trips.

Stream order, as the decoder pops it. y: for each step, the step's main symbols (one batched
call), then the bit lengths of the step's escaped symbols in the order they occur, then their
chunks in the same order. z: for each channel 0..C-1, the channel's ``n`` symbols, then that
channel's escape payloads in the same layout. The encoder pushes everything in reverse.

Corruption. ANS decoding never fails by itself: any words decode to some symbols. A stream is
accepted only if, after the expected symbols, the coder is back in its initial state (no
words left, state zero); byte lengths that are not a multiple of 4, a trailing zero word (the
encoder never writes one) and payloads decoding beyond int32 are rejected too. A stream that
runs out of words (truncated, emptied, or derailed by a flip so that it consumes words too
fast) drains the state to zero, and from state zero every symbol decodes as the lowest one
(the -bound escape marker with a zero payload; z: the low escape entry) and leaves the coder
empty: so the decoder also refuses a step (z: a channel) whose last symbol is the lowest one
when the coder is empty after it. The encoder cannot write such a step except when the last
symbols of a stream are exactly -bound (z: one below the table) with nothing after them,
which no model produces (the built-in one: |s| <= 46 against bound 4096); it refuses those
(``DataError``) rather than write a stream a decoder cannot tell from a truncated one. The
ANS stream of a stream's n symbols also has a floor: constriction gives every symbol of the
alphabet at least 2**-24, so no symbol costs less than ``-log2(1 - 2 * bound / 2**24)`` bits
(7.0e-4 at bound 4096); ``min_stream_bytes`` is half of that, and a shorter stream cannot be
real. What the coder cannot detect by itself is a change that decodes to other valid
symbols and ends exactly in the initial state (a drained state decodes the alphabet's
leaky tail symbols, 2**-24 each, and can land on it); for that, format 2.4 stores a
checksum of each stream's symbols (``symbol_checksum``): the encoders compute it from what
they code (``GaussianEncoder.checksum``, ``FactorizedCoder.encode`` callers), the decoders
verify it after the stream's last symbol when given one. The container's CRC32s still
guarantee the bytes' integrity; the symbol checksum catches what a resealed or otherwise
consistent but wrong stream decodes to.

Errors. A corrupt stream is a ``CorruptError`` (the user's problem), symbols no stream can
hold unambiguously a ``DataError`` (see Corruption); bad arguments are plain
``TypeError``/``ValueError``/``RuntimeError`` (the caller's bug). Only the scale table, which
a model config sets, is a ``ConfigError``.
"""
from __future__ import annotations

import math
import zlib

import constriction
import numpy as np

from stcm.errors import ConfigError, CorruptError, DataError
from stcm.kernels.reference import scale_to_index

__all__ = [
    "FactorizedCoder",
    "GaussianDecoder",
    "GaussianEncoder",
    "ScaleQuantizer",
    "gaussian_bits",
    "min_stream_bytes",
    "pinned_scale_table",
    "symbol_checksum",
]

_AnsCoder = constriction.stream.stack.AnsCoder
_model = constriction.stream.model

# Table values are rounded to this grid so that every platform computes identical values
# even when its exp/log differ in the last ulp.
TABLE_GRID = 2.0 ** -12
# constriction's default fixed-point precision: no symbol can cost more than 24 bits.
_MIN_PROBABILITY = 2.0 ** -24
_CHUNK_BITS = 16
_LENGTH_SYMBOLS = 33  # payload bit lengths 0..32
_INT32_MIN, _INT32_MAX = -(2 ** 31), 2 ** 31 - 1
_MAX_BOUND = 2 ** 20  # keeps the Gaussian alphabet far below the coder's 2**24 resolution
_PRECISION = 24  # constriction's fixed-point probabilities: every symbol gets >= 2**-24

# Models are immutable, so one instance serves every coder.
_LENGTH_MODEL = _model.Uniform(_LENGTH_SYMBOLS)
_CHUNK_FAMILY = _model.Uniform()


# ----------------------------------------------------------------------------- scale table

def pinned_scale_table(scale_min: float, scale_max: float, levels: int) -> np.ndarray:
    """Returns the log-spaced scale table the coder uses, pinned to a 2**-12 grid.

    Args:
        scale_min: The smallest scale, > 0.
        scale_max: The largest scale, > scale_min and finite.
        levels: Number of table values, >= 2.

    Returns:
        float64 array of ``levels`` strictly increasing multiples of 2**-12, each the nearest
        grid value to ``exp(linspace(log(scale_min), log(scale_max), levels))``.

    Raises:
        ConfigError: On bad arguments, or when rounding makes the table not strictly
            increasing or its first value zero (levels too dense for the grid).

    Example:
        >>> t = pinned_scale_table(0.11, 256.0, 64)
        >>> len(t), float(t[0]), float(t[-1])
        (64, 0.110107421875, 256.0)
        >>> bool(np.all(t * 4096 == np.round(t * 4096)))
        True
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 2:
        raise ConfigError(f"levels must be an integer >= 2, got {levels!r}")
    try:
        lo, hi = float(scale_min), float(scale_max)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scale_min and scale_max must be numbers: {err}") from None
    if not (0.0 < lo < hi < math.inf):
        raise ConfigError(f"need 0 < scale_min < scale_max < inf, got {scale_min!r}, {scale_max!r}")
    raw = np.exp(np.linspace(math.log(lo), math.log(hi), int(levels)))
    table = np.round(raw / TABLE_GRID) * TABLE_GRID
    if table[0] <= 0 or np.any(np.diff(table) <= 0):
        raise ConfigError(f"{levels} levels from {lo} to {hi} are too dense for a 2**-12 grid")
    return table


def _check_table(table: np.ndarray) -> np.ndarray:
    """Returns ``table`` as float64 after checking it is a usable scale table."""
    if not isinstance(table, np.ndarray) or table.ndim != 1 or table.size == 0:
        raise TypeError("the scale table must be a non-empty 1-D NumPy array")
    if not np.issubdtype(table.dtype, np.floating):
        raise TypeError(f"the scale table must be floating point, got {table.dtype}")
    table = table.astype(np.float64)
    if not np.all(np.isfinite(table)) or table[0] <= 0 or np.any(np.diff(table) <= 0):
        raise ValueError("the scale table must be finite, positive and strictly increasing")
    return table


class ScaleQuantizer:
    """Maps predicted scales to indexes into the scale table.

    The thresholds are the float32-rounded geometric midpoints of neighbouring table values,
    so a scale maps to the nearest table value in the log domain. The mapping itself is
    ``stcm.kernels.reference.scale_to_index`` (the one specification, which the runtime's
    steps and the CUDA twin follow): a pure function of the float32 value of its input, so
    the encoder and the decoder only need to see bit-identical float32 scales to pick
    identical indexes.

    Attributes:
        table: The float64 scale table (at most 256 values: indexes are uint8).
        thresholds: float32, ``len(table) - 1`` increasing geometric midpoints.

    Example:
        >>> q = ScaleQuantizer(pinned_scale_table(0.11, 256.0, 64))
        >>> q.index(np.array([0.0, 0.11, 1.0, 300.0, np.nan], np.float32))
        array([ 0,  0, 18, 63, 63], dtype=uint8)
    """

    def __init__(self, table: np.ndarray):
        self.table = _check_table(table)
        if self.table.size > 256:
            raise ValueError(f"at most 256 scale levels fit uint8 indexes, got {self.table.size}")
        # float64 products of 2**-12 multiples and their sqrt are correctly rounded IEEE
        # operations, so these thresholds are identical on every platform.
        self.thresholds = np.sqrt(self.table[:-1] * self.table[1:]).astype(np.float32)

    def index(self, scales: np.ndarray) -> np.ndarray:
        """uint8 table indexes of ``scales`` (any shape, cast to float32 first): the number
        of thresholds strictly below each; scales below the table (zero or negative
        included) map to 0, scales above it and NaN to the last index.

        Raises:
            TypeError: If ``scales`` is not a real-valued NumPy array.
        """
        if not isinstance(scales, np.ndarray):
            raise TypeError("scales must be a real-valued NumPy array")
        return scale_to_index(scales, self.thresholds)


# ------------------------------------------------------------------------- escape payloads

def _bit_length(v: np.ndarray) -> np.ndarray:
    """Bit lengths of non-negative int64 values below 2**53 (0 for 0)."""
    # frexp is exact for these values: v = m * 2**e with 0.5 <= m < 1, so e is the bit length.
    return np.frexp(v.astype(np.float64))[1].astype(np.int64)


def _chunk_layout(nb: np.ndarray):
    """For payload bit lengths ``nb``: (owner, position, size) of every chunk, in stream order."""
    rest = np.maximum(nb - 1, 0)  # bits below the implicit leading one
    count = -(-rest // _CHUNK_BITS)
    owner = np.repeat(np.arange(nb.size), count)
    starts = np.cumsum(count) - count
    position = np.arange(owner.size) - np.repeat(starts, count)
    size = np.minimum(_CHUNK_BITS, rest[owner] - _CHUNK_BITS * position)
    return owner, position, size


def _push_payloads(coder, v: np.ndarray) -> None:
    """Encodes payloads ``v`` (int64, 0 <= v < 2**32) so that they pop in order."""
    if v.size == 0:
        return
    nb = _bit_length(v)
    owner, position, size = _chunk_layout(nb)
    if owner.size:
        rest = v - (np.int64(1) << np.maximum(nb - 1, 0))
        chunks = (rest[owner] >> (_CHUNK_BITS * position)) & ((np.int64(1) << size) - 1)
        # Last in, first out: the chunks go on first so that the lengths pop before them.
        coder.encode_reverse(chunks.astype(np.int32), _CHUNK_FAMILY,
                             (np.int64(1) << size).astype(np.int32))
    coder.encode_reverse(nb.astype(np.int32), _LENGTH_MODEL)


def _pop_payloads(coder, count: int) -> np.ndarray:
    """Decodes ``count`` payloads (int64) pushed by ``_push_payloads``."""
    nb = coder.decode(_LENGTH_MODEL, count).astype(np.int64)
    owner, position, size = _chunk_layout(nb)
    rest = np.zeros(count, np.int64)
    if owner.size:
        chunks = coder.decode(_CHUNK_FAMILY, (np.int64(1) << size).astype(np.int32))
        np.add.at(rest, owner, chunks.astype(np.int64) << (_CHUNK_BITS * position))
    return np.where(nb == 0, 0, (np.int64(1) << np.maximum(nb - 1, 0)) + rest)


def _payload_bits(v: np.ndarray) -> float:
    """Bits the payloads ``v`` cost: the uniform length plus the bits below the leading one."""
    return float(v.size * math.log2(_LENGTH_SYMBOLS) + np.maximum(_bit_length(v) - 1, 0).sum())


# ------------------------------------------------------------------------ argument checks

def _check_bound(bound) -> int:
    if isinstance(bound, bool) or not isinstance(bound, (int, np.integer)) or not (
            2 <= bound <= _MAX_BOUND):
        raise ValueError(f"bound must be an integer in 2..{_MAX_BOUND}, got {bound!r}")
    return int(bound)


def _check_int_array(a, name: str, ndim: int) -> np.ndarray:
    """Returns ``a`` as int32 after checking it is an integer NumPy array within int32."""
    if not isinstance(a, np.ndarray) or a.ndim != ndim or not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{name} must be a {ndim}-D integer NumPy array")
    if a.dtype == np.int32:
        return a
    if a.size and (a.min() < _INT32_MIN or a.max() > _INT32_MAX):
        raise ValueError(f"{name} must fit in int32")
    return a.astype(np.int32)


def _check_indexes(indexes, levels: int) -> np.ndarray:
    """Returns ``indexes`` unchanged after checking they are 1-D integers in 0..levels-1."""
    if not isinstance(indexes, np.ndarray) or indexes.ndim != 1 or not np.issubdtype(
            indexes.dtype, np.integer):
        raise TypeError("indexes must be a 1-D integer NumPy array")
    # Checked per call on the hot path, so skip what the dtype already guarantees.
    info = np.iinfo(indexes.dtype)
    if indexes.size and ((info.min < 0 and indexes.min() < 0)
                         or (info.max >= levels and indexes.max() >= levels)):
        raise ValueError(f"indexes must lie in 0..{levels - 1}")
    return indexes


def _words(data) -> np.ndarray:
    """The uint32 words (native order) of little-endian stream bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) % 4:
        raise CorruptError(f"an ANS stream is whole 32-bit words, got {len(data)} bytes")
    return np.frombuffer(data, "<u4").astype(np.uint32)


def _decoder(data) -> "constriction.stream.stack.AnsCoder":
    words = _words(data)
    try:
        return _AnsCoder(words)
    except ValueError as err:  # a trailing zero word: never written by the encoder
        raise CorruptError(f"malformed ANS stream: {err}") from None


def _to_bytes(coder) -> bytes:
    return coder.get_compressed().astype("<u4").tobytes()


def _to_int32(s: np.ndarray) -> np.ndarray:
    """Decoded int64 symbols as int32; values outside int32 only come from a corrupt stream."""
    if s.size and (s.min() < _INT32_MIN or s.max() > _INT32_MAX):
        raise CorruptError("the stream decodes to a symbol outside int32")
    return s.astype(np.int32)


def _ran_dry(coder, last_is_lowest: bool, what: str) -> None:
    """CorruptError if a call's last symbol is the lowest one and the coder is empty after it:
    the state drained to zero, so the words ran out before the symbols (module docstring)."""
    if last_is_lowest and coder.is_empty():
        raise CorruptError(f"the {what} stream ran out of data before its last symbols "
                           "(truncated or corrupt)")


def symbol_checksum(symbols: np.ndarray, crc: int = 0) -> int:
    """The CRC32 (zlib's) of integer symbols as little-endian int32, continuing ``crc``.

    A stream's checksum is this over all its symbols in coding order, so it may be
    accumulated call by call: ``symbol_checksum(b, symbol_checksum(a))`` equals
    ``symbol_checksum(np.concatenate([a, b]))``. Symbols are exact integers on every backend,
    so every encoder and decoder computes the same value. Values must fit int32 (the coders'
    symbols do).

    Example:
        >>> a, b = np.array([0, -2, 5], np.int32), np.array([10**6])
        >>> symbol_checksum(b, symbol_checksum(a)) == symbol_checksum(np.array([0, -2, 5, 10**6]))
        True
        >>> symbol_checksum(np.zeros(0, np.int32)), hex(symbol_checksum(np.array([1])))
        (0, '0x99f8b879')
    """
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4"), crc) & 0xFFFFFFFF


def _check_checksum(checksum) -> int | None:
    if checksum is None:
        return None
    if isinstance(checksum, bool) or not isinstance(checksum, (int, np.integer)) or not (
            0 <= checksum <= 0xFFFFFFFF):
        raise ValueError(f"checksum must be None or a u32, got {checksum!r}")
    return int(checksum)


def _verify_checksum(got: int, expected: int | None, what: str) -> None:
    if expected is not None and got != expected:
        raise CorruptError(f"the {what} stream decodes to symbols whose checksum is {got:#010x}, "
                           f"but the file says {expected:#010x}: the stream is corrupt (damaged "
                           "and resealed, or another stream's)")


def _refuse_ambiguous_end() -> None:
    raise DataError("cannot code this latent: its last symbols lie exactly at the coder's "
                    "lowest escape with nothing after them, which a decoder cannot tell from a "
                    "truncated stream (runtime/ans.py); no trained model produces such values")


def min_stream_bytes(symbols: int, bound: int = 4096) -> int:
    """A lower bound on the bytes of a ``GaussianEncoder`` stream of ``symbols`` symbols.

    Every symbol costs at least ``-log2(1 - 2 * bound / 2**24)`` bits (constriction gives each
    of the other ``2 * bound`` symbols at least 2**-24), so ``symbols`` of them take at least
    that many bits; this is half of it in whole words, and one word for any symbol (an empty
    stream with symbols is refused by the decoder anyway). Shorter streams cannot be real,
    so a decoder refuses them before doing any work for their symbols.

    Example:
        >>> min_stream_bytes(0), min_stream_bytes(1), min_stream_bytes(64 * 64 * 160)
        (0, 4, 28)
    """
    if isinstance(symbols, bool) or not isinstance(symbols, (int, np.integer)) or symbols < 0:
        raise ValueError(f"symbols must be a non-negative integer, got {symbols!r}")
    if not symbols:
        return 0
    bits = int(symbols) * -math.log2(1.0 - 2 * _check_bound(bound) / 2 ** _PRECISION)
    return 4 * max(1, int(bits / 2 // 32))


# ------------------------------------------------------------------------------ latent y

class GaussianEncoder:
    """Collects the latent y step by step, then entropy-codes it in one pass.

    Call ``push`` once per decode step, in decode order, then ``finish`` once. Symbol
    ``symbols[i]`` is coded with a zero-mean quantized Gaussian of std ``table[indexes[i]]``;
    symbols with ``|s| >= bound`` are escaped (see the module docstring). ``checksum`` is the
    ``symbol_checksum`` of everything pushed, in order (format 2.4 stores it per stream).

    Args:
        table: The scale table (1-D, positive, strictly increasing).
        bound: Half-width of the Gaussian alphabet; ``±bound`` are the escape markers.

    Raises:
        TypeError, ValueError: On a bad table or bound.

    Example:
        >>> table = pinned_scale_table(0.11, 256.0, 64)
        >>> enc = GaussianEncoder(table)
        >>> enc.push(np.array([0, -2, 5], np.int32), np.array([10, 20, 30], np.uint8))
        >>> enc.push(np.array([10**6], np.int32), np.array([0], np.uint8))
        >>> data = enc.finish()
        >>> dec = GaussianDecoder(data, table, checksum=enc.checksum)
        >>> dec.pop(np.array([10, 20, 30], np.uint8))
        array([ 0, -2,  5], dtype=int32)
        >>> dec.pop(np.array([0], np.uint8))
        array([1000000], dtype=int32)
        >>> dec.finish()
    """

    def __init__(self, table: np.ndarray, bound: int = 4096):
        self.table = _check_table(table)
        self.bound = _check_bound(bound)
        self._model = _model.QuantizedGaussian(-self.bound, self.bound)
        # Decode-order segments: ("main", symbols, table indexes) or ("escape", payloads).
        # A stream's symbols wait here until ``finish`` (ANS codes in reverse), for every
        # tile of a latent at once: kept as int16 (|s| <= bound) and uint8 indexes, 3 bytes a
        # symbol, not int32 and float64 scales (12): 0.6 GB less at 10240^2 pixels.
        self._segments: list[tuple] = []
        self._index_dtype = np.uint8 if self.table.size <= 256 else np.uint16
        self._finished = False
        self.checksum = 0  # symbol_checksum of the symbols pushed so far

    def push(self, symbols: np.ndarray, indexes: np.ndarray) -> None:
        """Records one decode step's symbols (1-D int32) and their table indexes (1-D).

        Raises:
            TypeError, ValueError: On bad arrays (shapes, dtypes, indexes out of the table,
                values beyond int32). RuntimeError: after ``finish``.
        """
        if self._finished:
            raise RuntimeError("push() after finish()")
        s = _check_int_array(symbols, "symbols", 1)
        idx = _check_indexes(indexes, self.table.size)
        if s.shape != idx.shape:
            raise ValueError(f"symbols {s.shape} and indexes {idx.shape} differ in shape")
        if s.size == 0:
            return
        self.checksum = symbol_checksum(s, self.checksum)
        # Compare rather than take abs(): abs() of int32's minimum overflows.
        escaped = (s >= self.bound) | (s <= -self.bound)
        main = s.astype(np.int16 if self.bound < 2 ** 15 else np.int32)  # a copy, too
        if escaped.any():
            main[escaped] = np.where(s[escaped] > 0, self.bound, -self.bound)
        self._segments.append(("main", main, idx.astype(self._index_dtype)))
        if escaped.any():
            self._segments.append(("escape", np.abs(s[escaped].astype(np.int64)) - self.bound))

    def finish(self) -> bytes:
        """Encodes everything pushed and returns the stream (little-endian uint32 words).

        Raises:
            RuntimeError: If called twice.
        """
        if self._finished:
            raise RuntimeError("finish() called twice")
        self._finished = True
        # Consecutive main segments are one batched call: encoding a concatenation in reverse
        # is the same stream as encoding its parts one after the other.
        merged: list[tuple] = []
        for seg in self._segments:
            if seg[0] == "main" and merged and merged[-1][0] == "main":
                merged[-1][1].append(seg[1])
                merged[-1][2].append(seg[2])
            elif seg[0] == "main":
                merged.append(("main", [seg[1]], [seg[2]]))
            else:
                merged.append(seg)
        self._segments = []
        if merged and _ends_at_lowest(merged, self.bound):
            _refuse_ambiguous_end()
        coder = _AnsCoder()
        for seg in reversed(merged):
            if seg[0] == "main":
                symbols = np.concatenate(seg[1]).astype(np.int32)
                stds = self.table[np.concatenate(seg[2])]
                coder.encode_reverse(symbols, self._model, np.zeros(symbols.size), stds)
            else:
                _push_payloads(coder, seg[1])
        return _to_bytes(coder)


def _ends_at_lowest(merged: list[tuple], bound: int) -> bool:
    """Whether the last pushed step ends with the -bound marker and nothing but zero payloads
    after it: the one stream the decoder's run-dry check refuses."""
    last = merged[-1]
    if last[0] == "main":  # no escapes in the last step: its last symbol is not a marker
        return False
    return bool(merged[-2][1][-1][-1] == -bound and not last[1].any())


class GaussianDecoder:
    """Decodes a ``GaussianEncoder`` stream step by step.

    Call ``pop`` with each step's indexes, in the same steps as the encoder's pushes, then
    ``finish`` to check that the stream was consumed exactly and, given a ``checksum``, that
    the symbols popped are the ones coded. See ``GaussianEncoder`` for an example.

    Args:
        data: The stream bytes.
        table: The scale table the encoder used.
        bound: The encoder's bound.
        checksum: The encoder's ``checksum`` (format 2.4 stores it), or None: not verified.

    Raises:
        CorruptError: If ``data`` is not whole 32-bit words or ends in a zero word.
        TypeError, ValueError: On a bad table, bound or data type.
    """

    def __init__(self, data: bytes, table: np.ndarray, bound: int = 4096,
                 checksum: int | None = None):
        self.table = _check_table(table)
        self.bound = _check_bound(bound)
        self._expected = _check_checksum(checksum)
        self._model = _model.QuantizedGaussian(-self.bound, self.bound)
        self._coder = _decoder(data)
        self._zeros = np.zeros(0)
        self._finished = False
        self.checksum = 0  # symbol_checksum of the symbols popped so far

    def pop(self, indexes: np.ndarray) -> np.ndarray:
        """Decodes the next step's symbols: int32, one per index.

        Raises:
            CorruptError: If an escaped symbol decodes beyond int32.
            TypeError, ValueError: On bad indexes; RuntimeError after ``finish``.
        """
        if self._finished:
            raise RuntimeError("pop() after finish()")
        idx = _check_indexes(indexes, self.table.size)
        n = idx.size
        if n == 0:
            return np.zeros(0, np.int32)
        if self._zeros.size < n:
            self._zeros = np.zeros(max(n, 2 * self._zeros.size))
        main = self._coder.decode(self._model, self._zeros[:n], self.table[idx])
        _ran_dry(self._coder, main[-1] == -self.bound, "y")
        escaped = np.abs(main) == self.bound
        if not escaped.any():
            out = main.astype(np.int32, copy=False)
        else:
            s = main.astype(np.int64)
            s[escaped] = np.sign(s[escaped]) * (self.bound + _pop_payloads(self._coder,
                                                                          int(escaped.sum())))
            out = _to_int32(s)
        self.checksum = symbol_checksum(out, self.checksum)
        return out

    def finish(self) -> None:
        """Checks that the stream held exactly the popped symbols.

        Raises:
            CorruptError: If words are left, the coder is not back in its initial state, or
                the symbols popped do not match the checksum given.
        """
        self._finished = True
        if not self._coder.is_empty():
            raise CorruptError("the y stream does not end where its symbols do")
        _verify_checksum(self.checksum, self._expected, "y")


def gaussian_bits(symbols: np.ndarray, indexes: np.ndarray, table: np.ndarray,
                  bound: int = 4096) -> float:
    """The ideal information content of y symbols under the coder's model, in bits.

    Each symbol costs ``-log2 p`` with ``p`` the mass of its unit bin under the zero-mean
    Gaussian of std ``table[index]`` truncated to ``[-bound - 0.5, bound + 0.5]``, floored at
    the coder's smallest probability 2**-24. An escaped symbol costs its marker plus its
    payload (``log2(33)`` bits for the length and one bit per bit below the leading one).
    Compare with ``8 * len(stream)`` to measure the coder's overhead.

    Args:
        symbols: 1-D integer symbols.
        indexes: 1-D table indexes, same length.
        table: The scale table.
        bound: The coder's bound.

    Returns:
        The total in bits.

    Raises:
        TypeError, ValueError: On bad arguments.

    Example:
        >>> table = np.array([1.0])
        >>> round(gaussian_bits(np.array([0], np.int32), np.array([0]), table), 3)
        1.385
    """
    table = _check_table(table)
    bound = _check_bound(bound)
    s = _check_int_array(symbols, "symbols", 1)
    idx = _check_indexes(indexes, table.size)
    if s.shape != idx.shape:
        raise ValueError(f"symbols {s.shape} and indexes {idx.shape} differ in shape")
    if s.size == 0:
        return 0.0
    s = s.astype(np.int64)
    v = np.minimum(np.abs(s), bound)
    escapes = np.abs(s[np.abs(s) >= bound]) - bound
    # Few distinct (index, |s|) pairs: evaluate erfc once per pair, in float64.
    keys, counts = np.unique(idx.astype(np.int64) * (bound + 1) + v, return_counts=True)
    total = 0.0
    for key, count in zip(keys.tolist(), counts.tolist()):
        sigma = float(table[key // (bound + 1)]) * math.sqrt(2.0)
        a = key % (bound + 1)
        if a == 0:
            mass = math.erf(0.5 / sigma)
        else:
            mass = 0.5 * (math.erfc((a - 0.5) / sigma) - math.erfc((a + 0.5) / sigma))
        norm = math.erf((bound + 0.5) / sigma)  # the model is truncated to the alphabet
        total -= count * math.log2(max(mass / norm, _MIN_PROBABILITY))
    return total + _payload_bits(escapes)


# ------------------------------------------------------------------------------ latent z

class FactorizedCoder:
    """Codes the hyper latent z with one fixed probability table per channel.

    Row c of ``pmfs`` holds the probabilities of symbols ``offsets[c] .. offsets[c] +
    lengths[c] - 1`` (entries beyond ``lengths[c]`` are ignored). The mass a row leaves below
    1 is the tail; each of the row's two escape entries (below and above the real symbols)
    gets half of it, but never less than 2**-24, so escapes are always representable.

    Args:
        pmfs: (C, L) non-negative finite probabilities, each row summing to at most 1.
        lengths: (C,) integers in 1..L.
        offsets: (C,) integers; every ``offsets[c] - 1 .. offsets[c] + lengths[c]`` must fit
            in int32.

    Raises:
        TypeError, ValueError: On bad shapes or values.

    Example:
        >>> pmfs = np.array([[0.25, 0.5, 0.25], [0.5, 0.5, 0.0]])
        >>> coder = FactorizedCoder(pmfs, np.array([3, 2]), np.array([-1, 0]))
        >>> z = np.array([[-1, 0, 1, 7], [0, 1, -9, 1]], np.int32)
        >>> coder.decode(coder.encode(z), 4)
        array([[-1,  0,  1,  7],
               [ 0,  1, -9,  1]], dtype=int32)
    """

    def __init__(self, pmfs: np.ndarray, lengths: np.ndarray, offsets: np.ndarray):
        if not isinstance(pmfs, np.ndarray) or pmfs.ndim != 2 or 0 in pmfs.shape:
            raise TypeError("pmfs must be a non-empty 2-D NumPy array")
        if not np.issubdtype(pmfs.dtype, np.floating):
            raise TypeError(f"pmfs must be floating point, got {pmfs.dtype}")
        pmfs = pmfs.astype(np.float64)
        if not np.all(np.isfinite(pmfs)) or np.any(pmfs < 0):
            raise ValueError("pmfs must be finite and non-negative")
        channels, width = pmfs.shape
        lengths = _check_int_array(lengths, "lengths", 1).astype(np.int64)
        offsets = _check_int_array(offsets, "offsets", 1).astype(np.int64)
        if lengths.shape != (channels,) or offsets.shape != (channels,):
            raise ValueError(f"lengths and offsets must have shape ({channels},)")
        if np.any(lengths < 1) or np.any(lengths > width):
            raise ValueError(f"lengths must lie in 1..{width}")
        if np.any(offsets - 1 < _INT32_MIN) or np.any(offsets + lengths > _INT32_MAX):
            raise ValueError("offsets - 1 .. offsets + lengths must fit in int32")
        self.lengths, self.offsets = lengths, offsets
        self.probabilities: list[np.ndarray] = []  # normalized, escape entries included
        self._models = []
        for c in range(channels):
            row = pmfs[c, :lengths[c]]
            total = float(row.sum())
            if total > 1.0 + 1e-6:
                raise ValueError(f"row {c} of pmfs sums to {total} > 1")
            escape = max((1.0 - total) / 2.0, _MIN_PROBABILITY)
            p = np.concatenate([[escape], row, [escape]])
            self.probabilities.append(p / p.sum())
            self._models.append(_model.Categorical(p, perfect=False))

    @property
    def channels(self) -> int:
        return len(self._models)

    def _split(self, symbols: np.ndarray):
        """Categorical entries (C, n) and per-channel escape payloads of checked symbols."""
        lo = self.offsets[:, None]
        hi = (self.offsets + self.lengths)[:, None]  # first symbol above the table
        symbols = symbols.astype(np.int64)
        entries = np.clip(symbols - lo + 1, 0, self.lengths[:, None] + 1)
        payloads = np.where(symbols < lo, lo - 1 - symbols, symbols - hi)
        return entries.astype(np.int32), payloads

    def encode(self, symbols: np.ndarray) -> bytes:
        """Encodes (C, n) integer symbols; returns the stream (little-endian uint32 words).
        Its symbols' checksum, in coding order (channel by channel), is
        ``symbol_checksum(symbols)`` of the (C, n) array.

        Raises:
            TypeError, ValueError: On a bad shape, dtype or values beyond int32.
        """
        s = _check_int_array(symbols, "symbols", 2)
        if s.shape[0] != self.channels:
            raise ValueError(f"symbols must have {self.channels} rows, got {s.shape[0]}")
        entries, payloads = self._split(s)
        last = entries[-1]  # decoded last: the run-dry check's one legitimate false alarm
        escaped = (last == 0) | (last == self.lengths[-1] + 1)
        if last.size and last[-1] == 0 and not payloads[-1][escaped].any():
            _refuse_ambiguous_end()
        coder = _AnsCoder()
        for c in reversed(range(self.channels)):
            escaped = (entries[c] == 0) | (entries[c] == self.lengths[c] + 1)
            _push_payloads(coder, payloads[c][escaped])
            if s.shape[1]:
                coder.encode_reverse(entries[c], self._models[c])
        return _to_bytes(coder)

    def decode(self, data: bytes, n: int, checksum: int | None = None) -> np.ndarray:
        """Decodes ``n`` symbols per channel: (C, n) int32; given the encoded symbols'
        ``checksum`` (``symbol_checksum``), verifies them.

        Raises:
            CorruptError: If ``data`` is not whole 32-bit words, is not consumed exactly,
                decodes to a symbol beyond int32 or to symbols that do not match ``checksum``.
            TypeError, ValueError: On a bad ``n``, checksum or data type.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        n = int(n)
        expected = _check_checksum(checksum)
        coder = _decoder(data)
        out = np.empty((self.channels, n), np.int64)
        for c in range(self.channels):
            entries = coder.decode(self._models[c], n).astype(np.int64) if n else np.zeros(0, np.int64)
            _ran_dry(coder, n > 0 and entries[-1] == 0, "z")
            low, high = entries == 0, entries == self.lengths[c] + 1
            row = self.offsets[c] - 1 + entries
            escaped = low | high
            if escaped.any():
                v = _pop_payloads(coder, int(escaped.sum()))
                row[escaped] = np.where(low[escaped], self.offsets[c] - 1 - v,
                                        self.offsets[c] + self.lengths[c] + v)
            out[c] = row
        if not coder.is_empty():
            raise CorruptError("the z stream does not end where its symbols do")
        out = _to_int32(out)
        _verify_checksum(symbol_checksum(out), expected, "z")
        return out

    def ideal_bits(self, symbols: np.ndarray) -> float:
        """The ideal information content of (C, n) symbols under the normalized tables, bits.

        Escaped symbols cost their escape entry plus the payload, as in ``gaussian_bits``.

        Raises:
            TypeError, ValueError: On bad symbols.
        """
        s = _check_int_array(symbols, "symbols", 2)
        if s.shape[0] != self.channels:
            raise ValueError(f"symbols must have {self.channels} rows, got {s.shape[0]}")
        entries, payloads = self._split(s)
        total = 0.0
        for c in range(self.channels):
            p = np.maximum(self.probabilities[c][entries[c]], _MIN_PROBABILITY)
            total -= float(np.log2(p).sum())
            escaped = (entries[c] == 0) | (entries[c] == self.lengths[c] + 1)
            total += _payload_bits(payloads[c][escaped])
        return total
