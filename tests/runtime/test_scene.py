"""Scenes read block by block give exactly what normalising the whole image gives."""
import numpy as np
import pytest

from stcm.bands import normalize, to_band_groups
from stcm.errors import DataError
from stcm.runtime import scene as scene_module
from stcm.runtime.mask import SampleMask, missing_samples
from stcm.runtime.scene import ArraySink, ArraySource, Scene


@pytest.fixture
def small_fill_blocks(monkeypatch):
    """8-pixel fill blocks and scan strips: many blocks, edge blocks, on small images."""
    monkeypatch.setattr(scene_module, "FILL_LEVELS", 3)
    monkeypatch.setattr(scene_module, "FILL_BLOCK", 8)


def _holed(rng, bands, h, w, dtype=np.uint16):
    image = rng.integers(100, 4000, (bands, h, w)).astype(dtype)
    image[:, h // 4: h // 2, w // 5: w - 3] = 0  # a hole wider than a fill block
    image[-1, :, : w // 3] = 0  # one band differs: per-band planes
    image[0, rng.random((h, w)) < 0.05] = 0
    return image


@pytest.mark.parametrize("shape", [(4, 37, 53), (3, 64, 8), (5, 9, 130), (1, 1, 17)])
def test_blocks_normalise_and_fill_exactly_as_the_whole_image(small_fill_blocks, shape):
    rng = np.random.default_rng(sum(shape))
    image = _holed(rng, *shape)
    missing = missing_samples(image, 0.0)
    whole, norm = normalize(image, missing)
    scene = Scene.scan(ArraySource(image), 0.0)
    assert scene.norm == norm
    assert scene.mask == SampleMask.from_array(missing)
    _, h, w = shape
    np.testing.assert_array_equal(scene.normalized(range(shape[0]), (0, h), (0, w)), whole)
    groups = to_band_groups(whole)
    for g in range(scene.band_groups):
        for rows, cols in [((0, h), (0, w)), ((h // 3, h), (1, w // 2 + 1)),
                           ((h - 1, h), (w - 1, w))]:
            block = scene.group_block(g, rows, cols)
            np.testing.assert_array_equal(block[0], groups[g][:, rows[0]:rows[1],
                                                              cols[0]:cols[1]])


def test_canvas_blocks_repeat_the_image_edge(small_fill_blocks):
    rng = np.random.default_rng(3)
    image = _holed(rng, 3, 21, 30)
    scene = Scene.scan(ArraySource(image), 0.0)
    whole = to_band_groups(normalize(image, missing_samples(image, 0.0))[0])[0]
    canvas = np.pad(whole, ((0, 0), (5, 11), (7, 2)), mode="edge")
    np.testing.assert_array_equal(scene.group_block(0, (0, 37), (0, 39), (5, 7))[0], canvas)
    np.testing.assert_array_equal(scene.group_block(0, (30, 37), (0, 4), (5, 7))[0],
                                  canvas[:, 30:37, 0:4])


def test_float_images_with_nan_and_a_mask_band_scan_as_normalize_does(small_fill_blocks):
    rng = np.random.default_rng(4)
    image = rng.normal(0, 100, (2, 19, 23)).astype(np.float32)
    image[1, 3:9, 2:20] = np.nan
    band_mask = np.zeros((19, 23), bool)
    band_mask[15:, :] = True
    missing = missing_samples(image, None, band_mask)
    whole, norm = normalize(image, missing)
    scene = Scene.scan(ArraySource(image, band_mask), None)
    assert scene.norm == norm
    np.testing.assert_array_equal(scene.normalized([0, 1], (0, 19), (0, 23)), whole)


def test_scan_refuses_nan_outside_the_mask_like_normalize(small_fill_blocks):
    image = np.ones((2, 20, 6), np.float32)
    image[1, 12, 3] = np.inf
    image[1, 17, 0] = np.inf
    with pytest.raises(DataError) as whole:
        normalize(image)
    with pytest.raises(DataError) as blocks:
        Scene.scan(ArraySource(image), None)
    assert str(blocks.value) == str(whole.value)


def test_mask_windows_unpack_only_their_rows():
    rng = np.random.default_rng(5)
    missing = rng.random((3, 13, 11)) < 0.3
    mask = SampleMask.from_array(missing)
    np.testing.assert_array_equal(mask.window(13, 11, 3, (5, 12), (2, 9), range(1, 3)),
                                  missing[1:, 5:12, 2:9])


def test_array_sink_holds_the_decoded_window():
    class Header:
        bands, dtype = 2, "uint16"

    sink = ArraySink()
    sink.open(Header, (0, 0, 5, 4))
    sink.write(range(0, 2), (1, 3), (2, 5), np.full((2, 2, 3), 7, np.uint16))
    assert sink.pixels.shape == (2, 4, 5) and (sink.pixels[:, 1:3, 2:5] == 7).all()


def test_scan_reports_each_strip_of_both_passes(small_fill_blocks):
    """Progress of the scan: one call per strip read, with the strips of all passes known
    so far; a partly missing band adds the fill's second pass."""
    rng = np.random.default_rng(5)
    totals = []
    Scene.scan(ArraySource(_holed(rng, 3, 21, 30)), 0.0, totals.append)  # 3 strips of 8
    assert totals == [3, 3, 3, 6, 6, 6]
    totals.clear()
    Scene.scan(ArraySource(rng.integers(1, 9, (2, 17, 5)).astype(np.uint16)), 0.0,
               totals.append)
    assert totals == [3, 3, 3]  # nothing missing: one pass
