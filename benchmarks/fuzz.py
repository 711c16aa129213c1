"""Fuzzing the decoder: mutated real streams, checksums recomputed, must fail cleanly or decode exactly.

A mutation is what damage or an attacker does to a valid container *and then reseals it*, as
OSS-Fuzz harnesses do: bit flips, truncation, inserted or appended bytes, emptied streams,
streams swapped within a file or taken from another one, edited header bytes; every CRC32 is
recomputed, so the checksums catch nothing and each outcome shows what the decoder itself
checks. The symbol checksums of format 2.4 (one per stream, of its decoded symbols) are kept
as they were: a harness cannot recompute them without decoding the damaged stream, which is
the decoder's own check. An outcome is one of

    clean      a ``StcmError`` (what a user may see)
    same       decoded, and the symbols (or pixels) equal the original's: nothing changed
    header     decoded a *valid* edited header (a different, well-formed file: not an error)
    changed    decoded silently to other symbols: silent garbage, a failure
    other      any other exception (a traceback for the user), a failure
    crash      the worker process died (segfault, abort), a failure
    hang       an input ran past the time limit, a failure

Two targets. ``EntropyLayer`` is the container and the ANS layer without networks (random
symbols, scale indexes that depend on earlier decoded symbols like a context model's): fast
enough for a million inputs. ``codec_outcome`` runs a real ``stcm.Codec``; the test suite
runs it on a tiny model and ``--codec`` measures the issue's cases on the built-in one.

    python benchmarks/fuzz.py                  # 1,000,000 inputs, entropy layer, one worker
    python benchmarks/fuzz.py --inputs 20000 --workers 2
    python benchmarks/fuzz.py --codec default --per-kind 40
    python benchmarks/fuzz.py --inputs 20000 --no-checksums   # format 2.3 files, as before 2.4
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import select
import struct
import sys
import time
import zlib
from dataclasses import dataclass

import numpy as np

from stcm.errors import StcmError
from stcm.runtime.ans import (FactorizedCoder, GaussianDecoder, GaussianEncoder,
                              pinned_scale_table, symbol_checksum)
from stcm.runtime.container import (KIND_Y, KIND_Z, Georeference, Header, check_model,
                                    read_container, short_id, write_container)
from stcm.runtime.fields import ByteReader, write_varint
from stcm.runtime.header import ReferenceGrid
from stcm.runtime.scheduler import check_backed
from stcm.runtime.tiling import TileGrid

OUTCOMES = ("clean", "same", "header", "changed", "other", "crash", "hang")
FAILURES = ("changed", "other", "crash", "hang")
#: The issue's cases (streams edited, CRCs recomputed), then more of the same families.
STREAM_KINDS = ("empty_all", "empty_one", "drop_last_word", "flip_y", "append_word",
                "foreign_stream", "flip_z", "swap_streams", "truncate_stream", "insert_bytes")
RECORD_KINDS = ("record_byte", "record_insert", "record_delete", "truncate_file", "flip_any")
KINDS = STREAM_KINDS + RECORD_KINDS
MODEL = hashlib.sha256(b"stcm fuzz entropy layer").digest()
_READY = 255  # a worker's first byte: its corpus is built


# ------------------------------------------------------------------------------ mutations

def _u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def split(data: bytes) -> tuple[bytes, bytes, bytes]:
    """(prefix up to the record, record, payload) of a container whose record length parses."""
    reader = ByteReader(data, 6, what="stcm file")
    length = reader.varint("record length")
    start = reader.pos
    return data[:6], data[start:start + length], data[start + length + 4:]


def reseal(version: bytes, record: bytes, payload: bytes) -> bytes:
    """A container around ``record`` with its length and CRC32 recomputed."""
    prefix = version + write_varint(len(record)) + record
    return prefix + _u32(zlib.crc32(prefix)) + payload


def _streams(data: bytes):
    """(header, streams, symbol checksums or None) of a valid container."""
    c = read_container(data)
    checksums = None if c.checksums is None else dict(zip((e.key for e in c.entries),
                                                          c.checksums))
    return c.header, {e.key: c.stream(*e.key) for e in c.entries}, checksums


def _flip(chunk: bytes, rng) -> bytes:
    if not chunk:
        return chunk
    b = bytearray(chunk)
    b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    return bytes(b)


def mutate(kind: str, data: bytes, rng: np.random.Generator, donor: bytes) -> bytes:
    """``data`` (a valid container) damaged by ``kind``, every checksum recomputed.

    ``donor`` is another valid container (the source of ``foreign_stream``)."""
    if kind in STREAM_KINDS:
        header, streams, checksums = _streams(data)
        keys = list(streams)
        ys = [k for k in keys if k[1] == KIND_Y and streams[k]] or keys
        zs = [k for k in keys if k[1] == KIND_Z and streams[k]] or keys
        key = keys[int(rng.integers(len(keys)))]
        s = streams[key]
        if kind == "empty_all":
            streams = dict.fromkeys(keys, b"")
        elif kind == "empty_one":
            streams[key] = b""
        elif kind == "drop_last_word":
            streams[key] = s[:-4]
        elif kind in ("flip_y", "flip_z"):
            key = (ys if kind == "flip_y" else zs)[int(rng.integers(len(ys if kind == "flip_y" else zs)))]
            streams[key] = _flip(streams[key], rng)
        elif kind == "append_word":
            streams[key] = s + _u32(int(rng.integers(1, 2 ** 32)))
        elif kind == "foreign_stream":
            other = _streams(donor)[1]
            pool = [k for k in other if k[1] == key[1]]
            streams[key] = other[pool[int(rng.integers(len(pool)))]]
        elif kind == "swap_streams":
            other = keys[int(rng.integers(len(keys)))]
            streams[key], streams[other] = streams[other], streams[key]
        elif kind == "truncate_stream":
            streams[key] = s[:int(rng.integers(len(s) + 1))]
        elif kind == "insert_bytes":
            at, n = int(rng.integers(len(s) + 1)), int(rng.choice([1, 3, 4, 8]))
            streams[key] = s[:at] + rng.integers(0, 256, n, dtype=np.uint8).tobytes() + s[at:]
        return write_container(header, streams, checksums)
    version, record, payload = split(data)
    if kind == "truncate_file":
        return data[:int(rng.integers(len(data)))]
    if kind == "flip_any":  # anywhere, the record resealed (the streams' CRCs then mismatch)
        at = int(rng.integers(len(data)))
        b = bytearray(data)
        b[at] ^= 1 << int(rng.integers(8))
        if at < 6:
            return bytes(b)
        try:
            return reseal(*split(bytes(b)))
        except StcmError:
            return bytes(b)
    r = bytearray(record)
    at = int(rng.integers(len(r)))
    if kind == "record_byte":  # header fields and table entries set to edge values
        r[at] = int(rng.choice([0, 1, 0x7F, 0x80, 0xFF, int(rng.integers(256)), r[at] ^ 0x40]))
    elif kind == "record_insert":
        r[at:at] = rng.integers(0, 256, int(rng.integers(1, 4)), dtype=np.uint8).tobytes()
    else:
        del r[at:at + int(rng.integers(1, 4))]
    return reseal(version, bytes(r), payload)


# ---------------------------------------------------------------- the entropy layer alone

@dataclass
class Decoded:
    header: Header
    symbols: list


class EntropyLayer:
    """The codec's container and entropy path with the networks replaced by fixed rules.

    Per band group one z stream (``Z_CHANNELS`` x the z positions, factorized tables) and one
    y stream per tile; each tile is coded anti-diagonal by anti-diagonal like the wavefront,
    with scale indexes computed from z and the previous step's symbols, so a corrupt stream
    derails the rest of its tile as in the real decoder. Decoding runs the codec's checks:
    ``read_container``, ``check_model``, ``check_backed``, the streams' CRC32s, the
    coders' own end checks and the streams' symbol checksums. ``checksums=False`` writes
    containers without them (format 2.3's layout), to measure what they catch.
    """

    Y_CHANNELS, Z_CHANNELS = 3, 2

    def __init__(self, seed: int = 0, checksums: bool = True):
        self.checksums = checksums
        rng = np.random.default_rng(seed)
        self.table = pinned_scale_table(0.11, 256.0, 64)
        # Rows of 9 and 6 symbols, a tail of 1e-6 as learned tables have (escapes are rare).
        pmfs = np.zeros((self.Z_CHANNELS, 9))
        pmfs[0] = rng.dirichlet(np.full(9, 0.7)) * (1 - 1e-6)
        pmfs[1, :6] = rng.dirichlet(np.full(6, 0.7)) * (1 - 1e-6)
        self.z_coder = FactorizedCoder(pmfs, np.array([9, 6]), np.array([-4, -2]))

    def _indexes(self, base: int, step: int, n: int) -> np.ndarray:
        return ((base + 7 * step + 5 * np.arange(n)) % len(self.table)).astype(np.uint8)

    def _steps(self, box):
        """Per anti-diagonal of a tile: the number of positions on it."""
        _, _, h, w = box
        return [min(d, h - 1) - max(0, d - w + 1) + 1 for d in range(h + w - 1)]

    def _run(self, header: Header, code_tile, z_of):
        symbols = []
        hz, wz = header.z_shape
        grid = TileGrid(*header.latent_shape, header.tile_size)
        for g in range(header.band_groups):
            z = z_of(g, hz * wz)
            symbols.append(z)
            # Like the side input, the scales depend on the group, the tile and on z.
            for t, box in enumerate(grid.boxes()):
                symbols.append(code_tile(g, t, box, int(np.abs(z).sum()) + 13 * t + 29 * g))
        return symbols

    def encode(self, header: Header, rng: np.random.Generator) -> tuple[bytes, list]:
        """Random symbols for ``header``'s shape, coded into a container."""
        streams, checksums = {}, {}

        def z_of(g, n):
            p = self.z_coder.probabilities
            z = np.stack([rng.choice(len(p[c]), n, p=p[c]) - 1 + self.z_coder.offsets[c]
                          for c in range(self.Z_CHANNELS)]).astype(np.int32)
            if n and rng.random() < 0.3:  # an escape beyond the table
                z[0, int(rng.integers(n))] = int(rng.integers(-10 ** 6, 10 ** 6))
            streams[(g, KIND_Z, 0)] = self.z_coder.encode(z)
            checksums[(g, KIND_Z, 0)] = symbol_checksum(z)
            return z

        def code_tile(g, t, box, base):
            enc, out, prev = GaussianEncoder(self.table), [], 0
            for step, n in enumerate(self._steps(box)):
                idx = self._indexes(base + prev, step, n * self.Y_CHANNELS)
                s = np.rint(rng.standard_normal(idx.size) * self.table[idx]).astype(np.int32)
                if rng.random() < 0.05:
                    s[int(rng.integers(s.size))] = int(rng.integers(-2 ** 31, 2 ** 31 - 1))
                enc.push(s, idx)
                out.append(s)
                prev = int(np.abs(s.astype(np.int64)).sum()) % 64
            streams[(g, KIND_Y, t)] = enc.finish()
            checksums[(g, KIND_Y, t)] = enc.checksum
            return np.concatenate(out)

        symbols = self._run(header, code_tile, z_of)
        return write_container(header, streams, checksums if self.checksums else None), symbols

    def decode(self, data: bytes) -> Decoded:
        container = read_container(data)
        check_model(container, MODEL)
        check_backed(container, self.Y_CHANNELS, self.Z_CHANNELS)

        def z_of(g, n):
            return self.z_coder.decode(container.stream(g, KIND_Z, 0), n,
                                       container.checksum(g, KIND_Z, 0))

        def code_tile(g, t, box, base):
            dec = GaussianDecoder(container.stream(g, KIND_Y, t), self.table,
                                  checksum=container.checksum(g, KIND_Y, t))
            out, prev = [], 0
            for step, n in enumerate(self._steps(box)):
                s = dec.pop(self._indexes(base + prev, step, n * self.Y_CHANNELS))
                out.append(s)
                prev = int(np.abs(s.astype(np.int64)).sum()) % 64
            dec.finish()
            return np.concatenate(out)

        symbols = self._run(container.header, code_tile, z_of)
        return Decoded(container.header, symbols)


def random_header(rng: np.random.Generator) -> Header:
    """A valid header of a small image with a random mix of the optional parts."""
    bands = int(rng.integers(1, 8))
    dtype = str(rng.choice(["uint8", "uint16", "int16", "float32"]))
    if dtype == "uint8" and rng.random() < 0.5:
        lo, hi = [0] * bands, [255] * bands
    elif dtype == "float32":
        lo = [float(v) for v in rng.normal(0, 10, bands)]
        hi = [v + float(rng.uniform(0.1, 50)) for v in lo]
    else:
        top = {"uint8": 255, "uint16": 65535, "int16": 32767}[dtype]
        lo = [int(v) for v in rng.integers(0, top // 2, bands)]
        hi = [v + int(rng.integers(1, top // 2)) for v in lo]
    reference = short_id(hashlib.sha256(bytes(rng.integers(0, 256, 8, np.uint8))).digest())
    with_ref = rng.random() < 0.3
    args = dict(model_id=short_id(MODEL), height=int(rng.integers(1, 160)),
                width=int(rng.integers(1, 160)), bands=bands, dtype=dtype,
                normalization={"dtype": dtype, "lo": lo, "hi": hi},
                quality=float(rng.random()), tile_size=int(rng.integers(1, 5)),
                reference_id=reference if with_ref else None)
    if rng.random() < 0.3:
        args["georef"] = Georeference("EPSG:32633", (10.0, 0.0, 5e5, 0.0, -10.0, 5e6),
                                      float(rng.choice([0.0, float("nan")])))
    if rng.random() < 0.2:
        args["extra"] = {"band_descriptions": [f"B{b}" for b in range(bands)]}
    if with_ref and rng.random() < 0.5:
        args["reference_grid"] = ReferenceGrid((int(rng.integers(16)), 3), (1.0, 0.0, -3.0,
                                                                            0.0, 1.0, 0.0))
    header = Header(**args)
    if with_ref and rng.random() < 0.5:
        total = header.band_groups * header.tiles
        header = Header(**{**args, "intra_tiles": tuple(range(0, total, 2))})
    return header


def entropy_outcome(layer: EntropyLayer, data: bytes, original: Decoded) -> str:
    """The outcome class of decoding ``data`` (a mutation of ``original``'s container)."""
    try:
        got = layer.decode(data)
    except StcmError:
        return "clean"
    except Exception:  # noqa: BLE001 (classified, not hidden: counted as a failure)
        return "other"
    if got.header != original.header:
        return "header"
    same = len(got.symbols) == len(original.symbols) and all(
        np.array_equal(a, b) for a, b in zip(got.symbols, original.symbols))
    return "same" if same else "changed"


def codec_outcome(codec, data: bytes, pixels: np.ndarray, header: Header) -> str:
    """The outcome class of ``codec.decompress(data)`` against the original's pixels."""
    try:
        image = codec.decompress_image(data)
    except StcmError:
        return "clean"
    except Exception:  # noqa: BLE001
        return "other"
    if image.header != header:
        return "header"
    return "same" if np.array_equal(image.pixels, pixels) else "changed"


# --------------------------------------------------------------------- the million-input run

def _corpus(layer: EntropyLayer, seed: int, size: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(size):
        data, symbols = layer.encode(random_header(rng), rng)
        out.append((data, layer.decode(data)))
    return out


def _worker(start: int, stop: int, seed: int, memory_mb: int, fd: int,
            checksums: bool = True) -> None:
    """Runs inputs start..stop-1, writing one outcome byte per input to ``fd``."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    layer = EntropyLayer(seed, checksums)
    corpus = _corpus(layer, seed, 64)
    os.write(fd, bytes([_READY]))  # the time limit counts from here
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])
        data, original = corpus[i % len(corpus)]
        donor = corpus[(i * 7 + 1) % len(corpus)][0]
        try:
            bad = mutate(KINDS[i % len(KINDS)], data, rng, donor)
            outcome = entropy_outcome(layer, bad, original)
        except MemoryError:
            outcome = "other"
        os.write(fd, bytes([OUTCOMES.index(outcome) * len(KINDS) + i % len(KINDS)]))
    os._exit(0)


def run(inputs: int, seed: int, workers: int, time_limit: float, memory_mb: int,
        setup_limit: float = 600.0, checksums: bool = True) -> dict:
    """Fuzzes ``inputs`` mutated containers in ``workers`` processes; returns the counts.
    Every failure but silent changes (the first 50 of those) is listed with its input.
    ``checksums=False``: the containers have no symbol checksums (format 2.3)."""
    counts = {k: dict.fromkeys(OUTCOMES, 0) for k in KINDS}
    failures: list[dict] = []
    shares = [(inputs * w // workers, inputs * (w + 1) // workers) for w in range(workers)]
    running = {}

    def spawn(start, stop):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # never return into the parent's loop, whatever happens
            try:
                os.close(r)
                _worker(start, stop, seed, memory_mb, w, checksums)
            finally:
                os._exit(70)
        os.close(w)
        # [pid, next input, stop, last report, ready]: until its corpus is built a worker
        # gets setup_limit, not the per-input limit (a loaded machine takes a while).
        running[r] = [pid, start, stop, time.monotonic(), False]

    for start, stop in shares:
        if stop > start:
            spawn(start, stop)
    begin = time.monotonic()
    while running:
        ready, _, _ = select.select(list(running), [], [], 0.5)
        now = time.monotonic()
        for fd in ready:
            chunk = os.read(fd, 65536)
            state = running[fd]
            for b in chunk:
                if b == _READY:
                    state[4] = True
                    continue
                outcome, kind = OUTCOMES[b // len(KINDS)], KINDS[b % len(KINDS)]
                counts[kind][outcome] += 1
                if outcome in FAILURES and (outcome != "changed" or len(failures) < 50):
                    failures.append({"input": state[1], "kind": kind, "outcome": outcome})
                state[1] += 1
            state[3] = now
            if not chunk:  # the worker ended: normally, or it crashed at input state[1]
                pid, i, stop, _, _ = running.pop(fd)
                os.close(fd)
                _, status = os.waitpid(pid, 0)
                if i < stop:
                    counts[KINDS[i % len(KINDS)]]["crash"] += 1
                    failures.append({"input": i, "kind": KINDS[i % len(KINDS)],
                                     "outcome": "crash", "status": status})
                    if i + 1 < stop:
                        spawn(i + 1, stop)
        for fd, state in list(running.items()):
            if now - state[3] > (time_limit if state[4] else setup_limit):
                pid, i, stop, _, _ = running.pop(fd)
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                os.close(fd)
                counts[KINDS[i % len(KINDS)]]["hang"] += 1
                failures.append({"input": i, "kind": KINDS[i % len(KINDS)], "outcome": "hang"})
                if i + 1 < stop:
                    spawn(i + 1, stop)
    seconds = time.monotonic() - begin
    total = {o: sum(c[o] for c in counts.values()) for o in OUTCOMES}
    return {"inputs": inputs, "seed": seed, "workers": workers, "checksums": checksums,
            "seconds": round(seconds, 1),
            "inputs_per_second": round(inputs / seconds, 1), "total": total,
            "by_kind": counts, "failures": failures}


def measure_codec(name: str, per_kind: int, seed: int = 0) -> dict:
    """The issue's cases against a real ``Codec`` on the bundled samples: outcome counts."""
    import torch

    import stcm
    from stcm.runtime.codec import Codec
    from stcm.runtime.imageio import read_raster

    torch.set_num_threads(1)
    if name == "tiny":
        from stcm.config import get_config
        from stcm.models.codec import STCM

        torch.manual_seed(0)
        codec = Codec(STCM(get_config("tiny")).eval(), tile_size=2)
    else:
        codec = Codec(tile_size=4)
    crops = [read_raster(p).pixels[:, :96, :128] for p in sorted(stcm.SAMPLES_DIR.glob("*.tif"))]
    files = [codec.compress(c, q) for c in crops for q in (0.2, 0.8)]
    originals = [(d, codec.decompress(d), read_container(d).header) for d in files]
    rng = np.random.default_rng(seed)
    counts = {k: dict.fromkeys(OUTCOMES, 0) for k in STREAM_KINDS}
    for kind in STREAM_KINDS:
        for i in range(per_kind):
            data, pixels, head = originals[i % len(originals)]
            bad = mutate(kind, data, rng, originals[(i + 1) % len(originals)][0])
            counts[kind][codec_outcome(codec, bad, pixels, head)] += 1
    return {"codec": name, "per_kind": per_kind, "by_kind": counts}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--time-limit", type=float, default=10.0, help="seconds per input")
    p.add_argument("--memory-mb", type=int, default=2048, help="address-space cap per worker")
    p.add_argument("--codec", choices=["tiny", "default"],
                   help="instead: the issue's stream cases against a real codec")
    p.add_argument("--per-kind", type=int, default=30)
    p.add_argument("--no-checksums", action="store_true",
                   help="entropy layer: write containers without symbol checksums (format 2.3)")
    p.add_argument("--out", help="write the counts as JSON here")
    args = p.parse_args()
    if args.codec:
        result = measure_codec(args.codec, args.per_kind, args.seed)
        for kind, c in result["by_kind"].items():
            print(f"{kind:16s} " + " ".join(f"{o} {c[o]:4d}" for o in OUTCOMES if c[o]))
    else:
        result = run(args.inputs, args.seed, args.workers, args.time_limit, args.memory_mb,
                     checksums=not args.no_checksums)
        print(json.dumps({k: result[k] for k in ("inputs", "seconds", "inputs_per_second",
                                                 "total")}))
        for f in result["failures"][:10]:
            print("failure:", f)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    bad = sum(c[o] for c in result["by_kind"].values() for o in FAILURES)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
