"""Small hostile files cannot exhaust the decoder: claimed sizes are backed by bytes or refused
before any network runs, the pixel budget is the user's, allocator failures are StcmErrors,
and header fields that would decode to saturated or infinite pixels are refused.

Each hostile file is built as an attacker would: a valid header claiming a large image, the
streams emptied or replaced, and every CRC32 recomputed (``write_container``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_smooth_image
from stcm.cli import main
from stcm.config import get_config
from stcm.errors import (CorruptError, ImageTooLargeError, ResourceLimitError, StcmError)
from stcm.models.checkpoint import save_checkpoint
from stcm.models.codec import STCM
from stcm.runtime.ans import min_stream_bytes
from stcm.runtime.codec import Codec
from stcm.runtime.container import KIND_Y, KIND_Z, read_container, write_container
from stcm.runtime.files import decompress_file
from stcm.runtime.tiling import TileGrid

FIXTURE = Path(__file__).parent / "data" / "tiny_seed0_format2.2.stcm"
FIXTURE_PIXELS_SHA256 = "16b742cff9861af2e6f1429c7948fb173bfca46f3b3ecd5daa6e4733b0e7aae5"


def _tiny(tile_size=64, **kwargs) -> Codec:
    torch.manual_seed(0)
    return Codec(STCM(get_config("tiny")).eval(), tile_size=tile_size, **kwargs)


@pytest.fixture(scope="module")
def codec(one_torch_thread):
    return _tiny()


@pytest.fixture(scope="module")
def small_file(codec):
    image = np.rint(make_smooth_image(np.random.default_rng(0), 3, 64, 64) * 255)
    return codec.compress(image.astype(np.uint8), 0.5)


def _stages_run(codec, monkeypatch) -> list:
    """Records every network stage the codec's backend runs from now on."""
    ran, run = [], codec.backend.run
    monkeypatch.setattr(codec.backend, "run", lambda name, *a: ran.append(name) or run(name, *a))
    return ran


def _claiming(data: bytes, **changes) -> bytes:
    """``data``'s header with ``changes`` (a larger image), every stream empty, the CRC32s
    recomputed."""
    header = dataclasses.replace(read_container(data).header, **changes)
    return write_container(header, dict.fromkeys(header.stream_keys(), b""))


@pytest.mark.parametrize("changes", [
    dict(height=100_000, width=100_000),  # the 232 KB file: 98 s, then torch's allocator
    dict(height=4096, width=4096),        # 1.7 KB: > 90 s
    dict(bands=300, normalization={"dtype": "uint8", "lo": [0] * 300, "hi": [255] * 300}),
    # ^ 9 KB: 26 s
])
def test_empty_streams_claiming_a_large_image_are_refused_before_any_network_runs(
        codec, small_file, changes, monkeypatch):
    hostile = _claiming(small_file, **changes)
    assert len(hostile) < 250_000
    budget = _tiny(max_pixels=10 ** 12)  # a budget that lets the claim through
    ran = _stages_run(budget, monkeypatch)
    start = time.perf_counter()
    with pytest.raises(CorruptError, match="fewer than the"):
        budget.decompress(hostile)
    assert ran == [] and time.perf_counter() - start < 5


def test_random_streams_long_enough_for_the_bound_stop_where_their_bytes_run_out(
        codec, small_file, monkeypatch):
    # Streams as long as the bound asks, but random: the z decode runs dry long before the
    # 4096^2 image's synthesis, so the work stays proportional to the bytes present.
    rng = np.random.default_rng(1)
    header = dataclasses.replace(read_container(small_file).header, height=4096, width=4096)
    grid = TileGrid(*header.latent_shape, header.tile_size)
    need = [min_stream_bytes(codec.cfg.M * h * w) for _, _, h, w in grid.boxes()]
    streams = {k: rng.integers(1, 2 ** 32, max(1, (need[k[2]] if k[1] == KIND_Y else 64) // 4),
                               dtype=np.uint32).tobytes() for k in header.stream_keys()}
    hostile = write_container(header, streams)
    ran = _stages_run(codec, monkeypatch)
    with pytest.raises(CorruptError, match="ran out of data|does not end"):
        codec.decompress(hostile)
    assert "synthesis" not in ran


def test_the_pixel_budget_is_the_callers_and_refuses_before_reading_streams(small_file):
    small = _tiny(max_pixels=64 * 64 * 3 - 1)
    with pytest.raises(ImageTooLargeError, match="max_pixels"):
        small.decompress(small_file)
    assert isinstance(ImageTooLargeError("x"), ResourceLimitError)
    assert _tiny(max_pixels=64 * 64 * 3).decompress(small_file).shape == (3, 64, 64)
    big = _claiming(small_file, height=100_000, width=100_000)
    with pytest.raises(ImageTooLargeError):  # the default budget, 2**31 values
        _tiny().decompress(big)
    for bad in (0, -1, 1.5, True, "9"):
        with pytest.raises(StcmError):
            _tiny(max_pixels=bad)


def test_decompress_has_a_max_pixels_option(small_file, tmp_path, capsys):
    ckpt = save_checkpoint(_tiny().model, tmp_path / "tiny.safetensors")
    packed = tmp_path / "a.stcm"
    packed.write_bytes(small_file)
    args = ["decompress", str(packed), str(tmp_path / "a.tif"), "--model", str(ckpt)]
    assert main(args + ["--max-pixels", "1000"]) == 2
    assert "max_pixels" in capsys.readouterr().err and not (tmp_path / "a.tif").exists()
    assert main(args + ["--max-pixels", str(64 * 64 * 3)]) == 0


@pytest.mark.parametrize("failure", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough "
                 "memory: you tried to allocate 40000000000 bytes."),
    RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB"),
])
def test_allocator_failures_are_resource_limit_errors(codec, small_file, failure, monkeypatch):
    def run(name, *inputs):
        raise failure

    monkeypatch.setattr(codec.backend, "run", run)
    with pytest.raises(ResourceLimitError, match="out of memory"):
        codec.decompress(small_file)
    with pytest.raises(ResourceLimitError):
        codec.compress(np.zeros((3, 64, 64), np.uint8))


def test_other_errors_are_not_disguised_as_memory(codec, small_file, monkeypatch):
    def run(name, *inputs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(codec.backend, "run", run)
    with pytest.raises(RuntimeError, match="a bug"):
        codec.decompress(small_file)


@pytest.mark.parametrize("model, tile_size, size", [
    ("tiny", 1, 128), ("tiny", 64, 1024), ("default", 1, 128), ("default", 64, 512)])
def test_the_smallest_real_streams_are_above_the_bound(model, tile_size, size, one_torch_thread):
    # Flat images at quality 0 code to the fewest bytes per symbol a model writes (measured
    # margins over the bound in docs/format.md).
    codec = _tiny(tile_size) if model == "tiny" else Codec(tile_size=tile_size)
    margins = []
    for value in (0, 255):
        data = codec.compress(np.full((3, size, size), value, np.uint8), 0.0)
        c = read_container(data)
        grid = TileGrid(*c.header.latent_shape, c.header.tile_size)
        for e in c.entries:
            if e.kind == KIND_Z:
                assert e.length >= 4
                continue
            _, _, h, w = grid.boxes()[e.tile]
            need = min_stream_bytes(codec.cfg.M * h * w)
            assert e.length >= need
            margins.append(e.length / need)
    assert min(margins) >= (2.0 if tile_size == 64 else 1.0)


def test_a_stream_written_before_this_change_decodes_bit_identically(one_torch_thread):
    codec = _tiny(tile_size=2)
    data = FIXTURE.read_bytes()
    try:
        pixels = codec.decompress(data)
    except StcmError as exc:  # another torch draws other seeded weights: not this test's topic
        pytest.skip(f"the seeded tiny model differs here: {exc}")
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == FIXTURE_PIXELS_SHA256


# ---------------------------------------------------------------------------- header fields

@pytest.mark.parametrize("dtype, lo, hi", [
    ("float32", -1e308, 1e308),    # decoded to inf
    ("float32", 0.0, 1e39),
    ("float64", -1e308, 1e308),    # hi - lo overflows
    ("uint16", 70000, 70001),      # saturates at 65535
    ("uint16", 0, 70000),
    ("uint8", -1, 10),
    ("int16", -40000, 0),
])
def test_ranges_a_dtype_cannot_hold_are_refused_on_reading(small_file, dtype, lo, hi):
    header = read_container(small_file).header
    with pytest.raises(CorruptError, match="normalization"):
        dataclasses.replace(header, dtype=dtype, normalization={
            "dtype": dtype, "lo": [lo] * 3, "hi": [hi] * 3})


def test_ranges_normalize_writes_are_kept(small_file):
    # A constant band at the dtype's maximum has hi = max + 1; float32 extremes are kept.
    from stcm.bands import normalize

    one_band = dataclasses.replace(read_container(small_file).header, bands=1, height=8,
                                   width=8, dtype="uint8", normalization={
                                       "dtype": "uint8", "lo": [0], "hi": [255]})
    for image in (np.full((1, 8, 8), 65535, np.uint16), np.full((1, 8, 8), -32768, np.int16),
                  np.array([[[-3.4e38, 3.4e38]]], np.float32)):
        _, norm = normalize(image)
        header = read_container(write_container(
            dataclasses.replace(one_band, dtype=norm.dtype, normalization=norm.to_dict()),
            {(0, KIND_Z, 0): b"", (0, KIND_Y, 0): b""})).header
        assert header.normalization == norm.to_dict()


@pytest.mark.parametrize("names", [5, "abc", {"a": 1}, ["a"], [1, 2, 3], ["a", "b", 3]])
def test_bad_band_descriptions_are_refused_cleanly(codec, small_file, names, tmp_path):
    data = read_container(small_file)
    packed = tmp_path / "x.stcm"
    # The header checks extra's fields when it is built as well as when it is read
    # (runtime/metadata.py), so such a file can be neither written nor decoded.
    with pytest.raises(CorruptError, match="band_descriptions"):
        header = dataclasses.replace(data.header, extra={"band_descriptions": names})
        packed.write_bytes(write_container(header, {e.key: data.stream(*e.key)
                                                    for e in data.entries}))
        decompress_file(codec, packed, tmp_path / "x.tif")
    assert not (tmp_path / "x.tif").exists()


def test_good_band_descriptions_are_written(codec, small_file, tmp_path):
    from stcm.runtime.imageio import read_raster

    data = read_container(small_file)
    header = dataclasses.replace(data.header, extra={"band_descriptions": ["r", None, "b"]})
    packed = tmp_path / "x.stcm"
    packed.write_bytes(write_container(header, {e.key: data.stream(*e.key)
                                                for e in data.entries}))
    decompress_file(codec, packed, tmp_path / "x.tif")
    assert read_raster(tmp_path / "x.tif").band_descriptions[::2] == ("r", "b")
    assert math.isfinite(float(read_raster(tmp_path / "x.tif").pixels.mean()))
