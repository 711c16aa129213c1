"""compress_file / decompress_file read and write GeoTIFF windows: the same bytes and pixels
as the in-memory API, memory that does not grow with the scene, progress on every stage."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import rasterio

from stcm import SAMPLES_DIR
from stcm.runtime import codec as codec_module
from stcm.runtime.codec import Codec
from stcm.runtime.files import _extra, compress_file, decompress_file
from stcm.runtime.georeference import Georeference
from stcm.runtime.imageio import Raster, read_raster, write_raster

GEOREF = Georeference(crs="EPSG:32633", transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5e6),
                      nodata=0.0)


def _scene(height: int, width: int, bands: int = 4) -> np.ndarray:
    """The bundled Sentinel-2 sample mirrored out to height x width (bands repeated)."""
    pixels = read_raster(SAMPLES_DIR / "sentinel2_b234_8_uint16.tif").pixels
    pixels = pixels[np.arange(bands) % pixels.shape[0]]
    block = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    block = np.concatenate([block, block[:, :, ::-1]], axis=2)
    reps = (1, -(-height // block.shape[1]), -(-width // block.shape[2]))
    return np.ascontiguousarray(np.tile(block, reps)[:, :height, :width])


@pytest.fixture(scope="module")
def codec():
    import torch

    torch.set_num_threads(1)
    return Codec()


@pytest.fixture
def small_blocks(monkeypatch):
    """g_a in 128-pixel blocks, g_s in 4-position blocks: a 300 x 333 image has edge blocks
    on both sides, and a 256-pixel fill block ends inside it."""
    monkeypatch.setattr(codec_module, "ANALYSIS_BLOCK", 128)
    monkeypatch.setattr(codec_module, "SYNTHESIS_BLOCK", 4)


def test_file_path_is_bit_identical_to_the_in_memory_path(codec, small_blocks, tmp_path):
    image = _scene(300, 333)
    image[:, 40:140, 50:260] = 0  # nodata: a hole across fill and analysis blocks
    image[3, 200:, :30] = 0  # and one only band 4 misses: per-band mask planes
    write_raster(tmp_path / "in.tif", Raster(image, GEOREF, ("B2", "B3", "B4", "B8")))
    compress_file(codec, tmp_path / "in.tif", tmp_path / "a.stcm", 0.5)
    raster = read_raster(tmp_path / "in.tif")
    data = codec.compress(raster.pixels, 0.5, georef=raster.georef,
                          extra=_extra(raster.band_descriptions, raster.metadata))
    assert (tmp_path / "a.stcm").read_bytes() == data
    assert codec.decompress_image(data).header.mask.per_band

    decompress_file(codec, tmp_path / "a.stcm", tmp_path / "out.tif")
    back = read_raster(tmp_path / "out.tif")
    np.testing.assert_array_equal(back.pixels, codec.decompress(data))
    assert back.georef == raster.georef and back.band_descriptions == raster.band_descriptions
    window = (21, 30, 250, 190)
    decompress_file(codec, tmp_path / "a.stcm", tmp_path / "win.tif", window=window)
    np.testing.assert_array_equal(read_raster(tmp_path / "win.tif").pixels,
                                  codec.decompress(data, window=window))


def test_mask_band_files_round_trip_block_by_block(codec, small_blocks, tmp_path):
    image = _scene(300, 333, bands=3) + 1
    missing = np.zeros(image.shape[1:], bool)
    missing[250:, 100:] = True
    write_raster(tmp_path / "m.tif", Raster(image, None, missing=missing))
    compress_file(codec, tmp_path / "m.tif", tmp_path / "m.stcm", 0.5)
    data = codec.compress(image, 0.5, missing=missing,
                          extra=_extra(None, read_raster(tmp_path / "m.tif").metadata))
    assert (tmp_path / "m.stcm").read_bytes() == data
    decompress_file(codec, tmp_path / "m.stcm", tmp_path / "m_out.tif", cog=True)
    back = read_raster(tmp_path / "m_out.tif")
    np.testing.assert_array_equal(back.pixels, codec.decompress(data))
    np.testing.assert_array_equal(back.missing, missing)


_PEAK = textwrap.dedent("""
    import json, resource, sys, torch
    torch.set_num_threads(1)
    import stcm.runtime.codec as c
    c.ANALYSIS_BLOCK, c.SYNTHESIS_BLOCK = 128, 8  # halos: the model's transform_halo
    from stcm.runtime.files import compress_file, decompress_file
    codec = c.Codec()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    op, src, dst = sys.argv[1:]
    (compress_file if op == "compress" else decompress_file)(codec, src, dst)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"growth_mb": (after - before) / 1024}))
""")


def _peak_growth(op: str, source, target) -> float:
    done = subprocess.run([sys.executable, "-c", _PEAK, op, str(source), str(target)],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    return json.loads(done.stdout.strip().splitlines()[-1])["growth_mb"]


def test_peak_memory_does_not_grow_with_the_scene(tmp_path):
    """A 1024^2 scene of 24 uint16 bands (8 band groups; 16x the pixels of a 256^2 one) in
    small transform blocks. Whole-image float copies grow with pixels x bands: one float32
    copy of it is 96 MiB, and the in-memory path made several (the normalised image, its
    band groups, the decoded groups). Block by block only one band group's latent arrays
    grow (its latent, hyper prior and, encoding, symbol buffers: ~3 KB per latent position,
    12 MB here; the side inputs run a tile row at a time)."""
    bands, growth = 24, {}
    for size in (256, 1024):
        image = _scene(size, size, bands)
        image[:, : size // 4, : size // 3] = 0
        write_raster(tmp_path / f"{size}.tif", Raster(image, GEOREF))
        growth[size] = (_peak_growth("compress", tmp_path / f"{size}.tif",
                                     tmp_path / f"{size}.stcm"),
                        _peak_growth("decompress", tmp_path / f"{size}.stcm",
                                     tmp_path / f"{size}_out.tif"))
    float_copy_mb = bands * 1024 ** 2 * 4 / 2 ** 20
    for step in (0, 1):
        assert growth[1024][step] - growth[256][step] < float_copy_mb, growth


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "stcm", *args], capture_output=True,
                          text=True, cwd=cwd, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def test_cli_prints_plain_progress_lines_off_a_terminal_and_none_with_quiet(tmp_path):
    image = _scene(1024, 1024, bands=1)  # a megapixel: the size from which progress shows
    write_raster(tmp_path / "scene.tif", Raster(image, GEOREF))
    done = _cli("compress", "scene.tif", "scene.stcm", "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "stcm: encode scene.tif: scan 0/4 strips"  # 256 rows a strip
    assert "stcm: encode scene.tif: scan 4/4 strips" in lines
    assert "stcm: encode scene.tif: analysis 0/1 blocks" in lines
    assert "stcm: encode scene.tif: analysis 1/1 blocks" in lines
    steps = [line for line in lines if line.startswith("stcm: encode scene.tif: steps ")]
    assert 2 <= len(steps) <= 25 and steps[-1].split()[-2].split("/")[0] == \
        steps[-1].split()[-2].split("/")[1]  # about every tenth, not a line per step
    assert "\r" not in done.stderr  # no bar
    done = _cli("decompress", "scene.stcm", "out.tif", "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("stcm: decode scene.stcm: steps ") for line in
               done.stderr.splitlines())
    assert "stcm: decode scene.stcm: synthesis 1/1 blocks" in done.stderr.splitlines()
    quiet = _cli("compress", "scene.tif", "quiet.stcm", "--threads", "1", "--quiet",
                 cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "stcm:" not in quiet.stderr
    assert (tmp_path / "quiet.stcm").read_bytes() == (tmp_path / "scene.stcm").read_bytes()
    with rasterio.open(tmp_path / "out.tif") as ds:
        assert ds.shape == (1024, 1024)
