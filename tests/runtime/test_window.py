"""Window decode (``Codec.decompress(..., window=...)``): the full decode's crop, from only the
tiles the window needs."""
import dataclasses
import zlib

import numpy as np
import pytest
import rasterio
import torch

from conftest import make_smooth_image
from stcm.cli import main
from stcm.config import get_config
from stcm.errors import ConfigError, CorruptError, DataError
from stcm.models.codec import STCM
from stcm.models.entropy_parameters import ChannelContext, TemporalContext
from stcm.models.revisit import synthetic_revisit
from stcm.runtime.codec import Codec
from stcm.runtime.container import KIND_Y, read_container, write_container
from stcm.runtime.files import decompress_file
from stcm.runtime.georeference import Georeference
from stcm.runtime.scheduler import CHANNEL_CONTEXT_RADIUS, TEMPORAL_CONTEXT_RADIUS

# Large enough (latent 69 x 80) that a window skips tiles even with the synthesis halo (16)
# and the channel context's dilation (6 per group, 3 groups after the first in ``tiny``).
H, W = 1100, 1270
WINDOWS = [(0, 0, 1, 1), (W - 1, H - 1, 1, 1), (W - 37, 0, 37, 20),  # corners
           (0, 500, 50, 16), (601, 497, 40, 50),  # an edge; across tile borders
           (0, 0, W, H)]  # the whole image


def _model(seed=0) -> STCM:
    torch.manual_seed(seed)
    return STCM(get_config("tiny")).eval()


def _image(bands, h, w, seed=0):
    return np.rint(make_smooth_image(np.random.default_rng(seed), bands, h, w) * 255
                   ).astype(np.uint8)


@pytest.fixture(scope="module")
def coded():
    """(codec, container, full decode, full latents) of a 3-band image in tiles of 3."""
    torch.set_num_threads(1)
    codec = Codec(_model(), tile_size=3)
    data = codec.compress(_image(3, H, W), 0.6)
    full, latents = codec._decompress(data, None)
    return codec, data, full, latents


def _crop(pixels, window):
    col, row, w, h = window
    return pixels[:, row: row + h, col: col + w]


def test_context_radii_match_the_models_kernels():
    def radius(net):
        return sum(m.kernel_size[0] // 2 for m in net.modules() if isinstance(m, torch.nn.Conv2d))

    assert radius(ChannelContext(4, 8, 8)) == CHANNEL_CONTEXT_RADIUS
    assert radius(TemporalContext(4, 8, 8)) == TEMPORAL_CONTEXT_RADIUS


@pytest.mark.parametrize("window", WINDOWS)
def test_window_equals_the_full_decodes_crop(coded, window):
    codec, data, full, latents = coded
    image, window_latents = codec._decompress(data, None, None, window)
    # g_s runs on other blocks than in the full decode, so only the latent is guaranteed bit
    # for bit (docs/determinism.md); the pixels came out identical on every window here.
    assert np.array_equal(image.pixels, _crop(full.pixels, window))
    assert image.window == window
    plan, _ = codec._window_plan(full.header, window)
    r0, c0, h, w = plan.crop
    grid = plan.grid
    for group in plan.groups:  # every tile each group decoded holds the full decode's values
        sl = group.channels
        got = grid.split(window_latents[0][:, sl], group.tiles, (r0, c0))
        assert np.array_equal(got, grid.split(latents[0][:, sl], group.tiles))


def test_a_small_window_decodes_a_fraction_of_the_tiles(coded):
    codec, data, full, _ = coded
    plan, _ = codec._window_plan(full.header, (601, 497, 40, 50))
    # The last group's tiles: the window and the synthesis halo; each earlier group's
    # grow by the channel context, and some tiles are never read at all.
    assert len(plan.groups[-1].tiles) < plan.grid.count / 4
    assert len(plan.tiles) < plan.grid.count
    assert all(len(a.tiles) > len(b.tiles) for a, b in zip(plan.groups, plan.groups[1:]))


def test_one_tile_less_of_the_first_group_changes_the_window(coded):
    # The channel context's dilation is needed: without one outer tile of group 0, group 1
    # reads zeros there and decodes other values.
    codec, data, full, latents = coded
    plan, _ = codec._window_plan(full.header, (601, 497, 40, 50))
    first, second = plan.groups[:2]
    outer = sorted(set(first.tiles) - set(second.tiles))
    fewer = tuple(t for t in first.tiles if t != outer[len(outer) // 2])
    chunks = tuple(range(i, min(i + 16, len(fewer))) for i in range(0, len(fewer), 16))
    short = dataclasses.replace(plan, groups=(dataclasses.replace(first, tiles=fewer,
                                                                  chunks=chunks),
                                              *plan.groups[1:]))
    container = read_container(data)
    streams = {t: container.stream(0, KIND_Y, t) for t in plan.tiles}
    r0, c0, h, w = plan.crop
    z_latents = codec._decompress(data, None, None, (601, 497, 40, 50))[1]
    hyper = _hyper_crop(codec, container, plan)
    y_ok = codec.scheduler.decode(streams, full.header.latent_shape, hyper, None, plan=plan)
    gain = codec.tables.gains(full.header.quality)[1]
    assert np.array_equal(y_ok * gain, z_latents[0])  # the same call with the right plan
    sl = second.channels
    try:
        y_hat = codec.scheduler.decode(streams, full.header.latent_shape, hyper, None,
                                       plan=short)
    except CorruptError:  # the wrong parameters decoded garbage that ends off the stream
        return
    assert not np.array_equal(plan.grid.split(y_hat[:, sl], second.tiles, (r0, c0)),
                              plan.grid.split(latents[0][:, sl], second.tiles))


def _hyper_crop(codec, container, plan):
    from stcm.runtime.container import KIND_Z
    from stcm.runtime.scheduler import decode_z

    header = container.header
    z_hat = decode_z(codec.z_coder, container.stream(0, KIND_Z, 0),
                     (codec.cfg.N, *header.z_shape), codec.medians)
    return codec._hyper(z_hat, plan.crop)


def _corrupt_stream(data: bytes, group: int, tile: int) -> bytes:
    """``data`` with one y stream's bytes inverted (its CRC left as it was)."""
    container = read_container(data)
    entry = next(e for e in container.entries if e.key == (group, KIND_Y, tile))
    start = container.payload_start + entry.offset
    out = bytearray(data)
    out[start: start + entry.length] = bytes(b ^ 0xFF for b in out[start: start + entry.length])
    assert zlib.crc32(out[start: start + entry.length]) != entry.crc32
    return bytes(out)


def test_streams_outside_the_window_are_not_read(coded):
    codec, data, full, _ = coded
    window = (0, 0, 20, 20)
    plan, _ = codec._window_plan(full.header, window)
    far = plan.grid.count - 1  # the bottom-right tile
    assert far not in plan.tiles
    broken = _corrupt_stream(data, 0, far)
    assert np.array_equal(codec.decompress(broken, window=window), _crop(full.pixels, window))
    with pytest.raises(CorruptError, match=f"tile {far}"):
        codec.decompress(broken)
    # a stream the window does read is still checked
    with pytest.raises(CorruptError):
        codec.decompress(_corrupt_stream(data, 0, plan.tiles[0]), window=window)


def _wrong_checksum(data: bytes, index: int) -> bytes:
    """``data`` with stream ``index``'s symbol checksum changed, rewritten consistently (a
    file whose stream decodes to other symbols than it says)."""
    c = read_container(data)
    sums = {e.key: v ^ (i == index) for i, (e, v) in enumerate(zip(c.entries, c.checksums))}
    return write_container(c.header, {e.key: c.stream(*e.key) for e in c.entries}, sums)


def test_each_stream_a_window_decodes_is_verified_against_its_own_checksum(coded):
    codec, data, full, _ = coded
    window = (601, 497, 40, 50)
    plan, _ = codec._window_plan(full.header, window)
    inner = plan.groups[-1].tiles[0]  # decoded to its end by the window
    outer = sorted(set(plan.groups[0].tiles) - set(plan.groups[-1].tiles))[0]  # in part
    far = next(t for t in range(plan.grid.count) if t not in plan.tiles)  # not read
    with pytest.raises(CorruptError, match="checksum"):
        codec.decompress(_wrong_checksum(data, 1 + inner), window=window)
    with pytest.raises(CorruptError, match="the z stream decodes to symbols whose checksum"):
        codec.decompress(_wrong_checksum(data, 0), window=window)
    # A stream read only in part, or not at all, cannot be verified by the window; the whole
    # decode verifies them.
    for tile in (outer, far):
        broken = _wrong_checksum(data, 1 + tile)
        assert np.array_equal(codec.decompress(broken, window=window),
                              _crop(full.pixels, window))
        with pytest.raises(CorruptError, match="checksum"):
            codec.decompress(broken)


def test_multiband_window_with_a_mask():
    codec = Codec(_model(1), tile_size=2)
    image = _image(5, 700, 660, seed=3).astype(np.uint16) * 40  # two band groups
    missing = np.zeros(image.shape, bool)
    missing[:, 300:340, 310:400] = True
    missing[2, 100:120, :] = True
    data = codec.compress(image, 0.5, georef=Georeference(None, None, 0.0), missing=missing)
    full = codec.decompress_image(data)
    for window in [(300, 290, 80, 60), (0, 95, 30, 40), (659, 699, 1, 1)]:
        got = codec.decompress_image(data, window=window)
        assert got.pixels.shape == (5, window[3], window[2])
        assert np.array_equal(got.pixels, _crop(full.pixels, window))
        assert np.array_equal(got.missing, _crop(full.missing, window))
    assert (codec.decompress(data, window=(320, 305, 10, 10)) == 0).all()


def test_window_with_a_temporal_reference_on_a_canvas():
    codec = Codec(_model(2), tile_size=2)
    first = _image(3, 420, 400, seed=4)
    later = np.rint(synthetic_revisit(first / 255.0, np.random.default_rng(1)) * 255
                    ).astype(np.uint8)
    # georeferenced 21 pixels apart: the later image lies on a canvas (header.origin)
    g0 = Georeference("EPSG:32633", (10, 0, 500000, 0, -10, 5000000), None)
    g1 = Georeference("EPSG:32633", (10, 0, 500210, 0, -10, 4999790), None)
    blobs = [codec.compress(first, 0.7, georef=g0),
             None]
    blobs[1] = codec.compress(later[:, :380, :370], 0.7, georef=g1, reference=blobs[0],
                              temporal="on")
    header = read_container(blobs[1]).header
    assert header.reference_id is not None and header.origin != (0, 0)
    full = codec.decompress(blobs[1], reference=blobs[0])
    for window in [(0, 0, 33, 17), (200, 150, 60, 70), (369, 379, 1, 1)]:
        got = codec.decompress(blobs[1], reference=blobs[0], window=window)
        assert np.array_equal(got, _crop(full, window))


@pytest.mark.parametrize("window, error", [
    ((0, 0, 0, 5), ConfigError), ((0, 0, 5, -1), ConfigError), ((0, 0, 5), ConfigError),
    ((0.5, 0, 5, 5), ConfigError), ((-1, 0, 5, 5), DataError), ((0, 0, W + 1, 5), DataError),
    ((W - 4, H - 4, 5, 5), DataError)])
def test_bad_windows_are_refused(coded, window, error):
    codec, data, _, _ = coded
    with pytest.raises(error):
        codec.decompress(data, window=window)


def test_float_models_refuse_windows():
    codec = Codec(STCM(get_config("tiny", exact=False)).eval(), tile_size=4)
    data = codec.compress(_image(3, 64, 64), 0.5)
    with pytest.raises(ConfigError, match="exact"):
        codec.decompress(data, window=(0, 0, 8, 8))


def test_decompress_file_writes_the_windows_geotiff(tmp_path):
    codec = Codec(_model(), tile_size=3)
    image = _image(3, 200, 240, seed=5)
    georef = Georeference("EPSG:32633", (10, 0, 500000, 0, -10, 5000000), None)
    source = tmp_path / "a.stcm"
    source.write_bytes(codec.compress(image, 0.6, georef=georef))
    full = codec.decompress(source.read_bytes())
    decompress_file(codec, source, tmp_path / "w.tif", window=(40, 30, 64, 50))
    with rasterio.open(tmp_path / "w.tif") as f:
        assert (f.width, f.height) == (64, 50)
        assert tuple(f.transform)[:6] == (10, 0, 500400, 0, -10, 4999700)
        assert np.array_equal(f.read(), _crop(full, (40, 30, 64, 50)))


def test_cli_window(tmp_path, capsys):
    codec = Codec()  # the CLI's built-in model
    image = _image(3, 96, 80, seed=6)
    source = tmp_path / "a.stcm"
    source.write_bytes(codec.compress(image, 0.6))
    assert main(["decompress", str(source), str(tmp_path / "w.tif"),
                 "--window", "8,16,40,30"]) == 0
    with rasterio.open(tmp_path / "w.tif") as f:
        assert np.array_equal(f.read(), _crop(codec.decompress(source.read_bytes()),
                                              (8, 16, 40, 30)))
    assert main(["decompress", str(source), str(tmp_path / "x.tif"), "--window", "8,16"]) != 0
    assert "COL_OFF,ROW_OFF,WIDTH,HEIGHT" in capsys.readouterr().err
    assert main(["decompress", str(source), str(tmp_path / "y.tif"),
                 "--window", "70,0,20,10"]) != 0
    assert "does not lie inside" in capsys.readouterr().err


def test_the_hyper_margin_is_the_least_that_gives_the_whole_values(monkeypatch):
    """Psi of a crop from the z cells under it and HYPER_MARGIN around them equals the whole
    Psi's crop (h_s reads 1 z cell before a crop and 2 after it); one cell less does not."""
    import stcm.runtime.codec as codec_module

    torch.set_num_threads(1)
    codec = Codec(_model(), tile_size=3)
    rng = np.random.default_rng(0)
    z_hat = rng.integers(-6, 7, (1, codec.cfg.N, 9, 11)).astype(np.float32)
    whole = codec._hyper(z_hat)
    crops = [(4, 8, 12, 16), (0, 0, 8, 8), (20, 28, 16, 16), (8, 4, 20, 24)]

    def matches():
        for r0, c0, h, w in crops:
            got = codec._hyper(z_hat, (r0, c0, h, w))
            if not np.array_equal(got, whole[:, :, r0: r0 + h, c0: c0 + w]):
                return False
        return True

    assert matches()
    monkeypatch.setattr(codec_module, "HYPER_MARGIN", codec_module.HYPER_MARGIN - 1)
    assert not matches()


def test_a_window_reads_only_the_reference_tiles_it_needs(monkeypatch):
    """On the reference's own grid, a window decodes the reference's latent only under its
    plan (no pixels of the reference at all) and gives the full decode's crop."""
    from stcm.runtime import container as container_module

    codec = Codec(_model(2), tile_size=3)
    first = _image(3, H, W, seed=5)
    # Another illumination, no shift: the later image stays on the reference's grid.
    later = np.clip(first * 0.9 + 12 + np.random.default_rng(2).normal(0, 2, first.shape),
                    0, 255).astype(np.uint8)
    blobs = codec.compress_series([first, later], 0.7, temporal="on")
    assert read_container(blobs[1]).header.reference_grid is None
    full = codec.decompress(blobs[1], reference=blobs[0])
    reads, stages = set(), []
    stream, run = container_module.Container.stream, codec.backend.run

    def counting(self, band_group, kind, tile):
        if self.header.reference_id is None:  # the reference's container
            reads.add((band_group, kind, tile))
        return stream(self, band_group, kind, tile)

    def spy(stage, *inputs):
        stages.append(stage)
        return run(stage, *inputs)

    monkeypatch.setattr(container_module.Container, "stream", counting)
    monkeypatch.setattr(codec.backend, "run", spy)
    window = (W - 50, 20, 40, 30)
    got = codec.decompress(blobs[1], reference=blobs[0], window=window)
    assert np.array_equal(got, _crop(full, window))
    header = read_container(blobs[0]).header
    y_tiles = {t for _, kind, t in reads if kind == KIND_Y}
    assert 0 < len(y_tiles) < header.tiles / 2, (len(y_tiles), header.tiles)  # 272 of 648
    assert stages.count("synthesis") == 1  # the window's one block; none for the reference
