"""Tests of training data: listing, reading, crop and pair sampling, splitting."""
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import make_smooth_image
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning

from stcm.errors import DataError
from stcm.models import data
from stcm.models.data import (
    IMAGE_SUFFIXES,
    CropSampler,
    PairSampler,
    fixed_crops,
    image_shape,
    list_images,
    read_image,
    split_by_scene,
)


def _write_tif(path: Path, pixels: np.ndarray) -> Path:
    bands, h, w = pixels.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=bands,
                           dtype=pixels.dtype.name) as ds:
            ds.write(pixels)
    return path


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_list_images_is_recursive_sorted_and_case_insensitive(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    for name in ("b.PNG", "a.tif", "sub/c.JPG", "sub/deeper/d.jp2", "notes.txt",
                 "a.tif.aux.xml", "._a.tif"):
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a.tif", "b.PNG", "sub/c.JPG", "sub/deeper/d.jp2"]


def test_list_images_errors_on_empty_folder(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as info:
        list_images(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert all(s in str(info.value) for s in IMAGE_SUFFIXES)


def test_list_images_errors_on_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_read_image_returns_native_dtype_and_band_first_shape(image_folder):
    expected = {"rgb_a.png": ((3, 96, 80), np.uint8), "rgb_b.png": ((3, 70, 130), np.uint8),
                "ms16.tif": ((5, 120, 100), np.uint16), "gray.tif": ((1, 64, 64), np.uint8)}
    for name, (shape, dtype) in expected.items():
        pixels = read_image(image_folder / name)
        assert pixels.shape == shape and pixels.dtype == dtype, name
        assert image_shape(image_folder / name) == shape
    ms = read_image(image_folder / "ms16.tif")
    assert 200 <= ms.min() and ms.max() <= 9000 and ms.max() - ms.min() > 5000


def test_read_image_window_matches_full_read(image_folder):
    for name in ("rgb_b.png", "ms16.tif"):
        full = read_image(image_folder / name)
        part = read_image(image_folder / name, window=(5, 7, 30, 41))
        np.testing.assert_array_equal(part, full[:, 5:35, 7:48])


@pytest.mark.parametrize("window", [(-1, 0, 10, 10), (0, 0, 0, 10), (60, 0, 11, 10),
                                    (0, 125, 10, 10), (0, 0, 10)])
def test_read_image_rejects_window_outside_image(image_folder, window):
    with pytest.raises(DataError):
        read_image(image_folder / "rgb_b.png", window=window)  # 70 x 130


def test_read_image_of_plain_png_emits_no_warning(image_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_image(image_folder / "rgb_a.png")


def test_unreadable_file_raises_data_error_naming_it(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    with pytest.raises(DataError, match="broken.png"):
        image_shape(bad)
    with pytest.raises(DataError, match="broken.png"):
        CropSampler([bad])


def test_four_band_8bit_geotiff_keeps_its_fourth_band(tmp_path):
    # GDAL tags band 4 of such files as alpha, but in remote sensing it is usually NIR.
    pixels = np.random.default_rng(0).integers(0, 256, (4, 6, 7), dtype=np.uint8)
    path = _write_tif(tmp_path / "rgbn.tif", pixels)
    assert image_shape(path) == (4, 6, 7)
    np.testing.assert_array_equal(read_image(path), pixels)


def test_png_drops_alpha_and_expands_palette(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (10, 12, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert image_shape(tmp_path / "rgba.png") == (3, 10, 12)
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"),
                                  np.moveaxis(rgba[..., :3], -1, 0))
    palette_image = Image.fromarray(rgba[..., :3], "RGB").quantize(16)
    palette_image.save(tmp_path / "palette.png")
    expected = np.moveaxis(np.asarray(palette_image.convert("RGB")), -1, 0)
    assert image_shape(tmp_path / "palette.png") == (3, 10, 12)
    np.testing.assert_array_equal(read_image(tmp_path / "palette.png"), expected)


def test_crops_are_in_unit_range_and_3_bands(image_folder):
    sampler = CropSampler(list_images(image_folder), crop=40)
    x = sampler.batch(np.random.default_rng(0), 24)
    assert x.shape == (24, 3, 40, 40) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    assert x.std() > 0.05  # real content, not a constant


def test_crop_sampler_is_deterministic_given_seed(image_folder):
    paths = list_images(image_folder)
    a = CropSampler(paths, crop=32).batch(np.random.default_rng(7), 6)
    b = CropSampler(paths, crop=32).batch(np.random.default_rng(7), 6)
    c = CropSampler(paths, crop=32).batch(np.random.default_rng(8), 6)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Without an rng, the constructor's seed decides.
    np.testing.assert_array_equal(CropSampler(paths, 32, seed=3).sample(),
                                  CropSampler(paths, 32, seed=3).sample())


def test_windowed_and_cached_reads_give_identical_crops(image_folder, monkeypatch):
    paths = list_images(image_folder)
    cached = CropSampler(paths, crop=32).batch(np.random.default_rng(5), 10)
    monkeypatch.setattr(data, "CACHE_MAX_VALUES", 0)  # every image is "large"
    windowed = CropSampler(paths, crop=32).batch(np.random.default_rng(5), 10)
    np.testing.assert_array_equal(cached, windowed)


def test_uint8_crops_are_divided_by_255_not_stretched(image_folder):
    sampler = CropSampler([image_folder / "rgb_a.png", image_folder / "gray.tif"], crop=24)
    x = sampler.batch(np.random.default_rng(1), 12) * 255
    np.testing.assert_allclose(x, np.rint(x), atol=1e-3)
    full = read_image(image_folder / "rgb_a.png")
    assert x.min() >= full.min() - 1e-3 and x.max() <= full.max() + 1e-3


def test_16bit_crops_are_stretched_into_a_random_interval_down_to_a_twentieth(image_folder):
    sampler = CropSampler([image_folder / "ms16.tif"], crop=32)
    x = sampler.batch(np.random.default_rng(2), 40)
    spans = x.max(axis=(2, 3)) - x.min(axis=(2, 3))
    assert spans.min() >= 0.05 - 1e-5 and spans.max() <= 1.0 + 1e-6
    # Log-uniform widths: median 0.22, and low-contrast crops (as whole-image min/max give at
    # coding time) are common.
    assert 0.1 < np.median(spans) < 0.45 and (spans < 0.1).mean() > 0.1 and spans.max() > 0.7
    assert x.min(axis=(2, 3)).max() > 0.05


def test_crop_sampler_chooses_three_distinct_bands_in_random_order(tmp_path):
    pixels = np.broadcast_to(np.arange(1, 6, dtype=np.uint8)[:, None, None] * 40, (5, 16, 16))
    sampler = CropSampler([_write_tif(tmp_path / "ms.tif", np.ascontiguousarray(pixels))], 8)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        bands = tuple(int(round(v * 255 / 40)) - 1 for v in sampler.sample(rng)[:, 0, 0])
        assert len(set(bands)) == 3
        seen.add(bands)
    assert set().union(*seen) == set(range(5))
    assert len(seen) > 20  # orders and subsets vary


def test_crop_sampler_repeats_bands_of_images_with_fewer_than_three(image_folder, tmp_path):
    gray = CropSampler([image_folder / "gray.tif"], crop=16).sample(np.random.default_rng(0))
    np.testing.assert_array_equal(gray[0], gray[1])
    np.testing.assert_array_equal(gray[1], gray[2])
    two = _write_tif(tmp_path / "two.tif", np.stack([np.full((8, 8), 10), np.full((8, 8), 200)])
                     .astype(np.uint8))
    x = CropSampler([two], crop=8).sample(np.random.default_rng(0))
    np.testing.assert_allclose(x[:, 0, 0] * 255, [10, 200, 200], atol=1e-3)


def test_crop_sampler_reflect_pads_images_smaller_than_crop(tmp_path):
    pixels = np.arange(5 * 7, dtype=np.uint8).reshape(1, 5, 7)
    sampler = CropSampler([_write_tif(tmp_path / "small.tif", pixels)], crop=12)
    x = sampler.sample(np.random.default_rng(0))
    assert x.shape == (3, 12, 12)
    values = np.unique(np.rint(x * 255).astype(int))
    assert set(values) == set(range(35))  # padding reuses image values, adds none


def test_crop_sampler_picks_images_in_proportion_to_the_root_of_their_area(tmp_path):
    small = _write_tif(tmp_path / "small.tif", np.zeros((1, 8, 8), np.uint8))
    large = _write_tif(tmp_path / "large.tif", np.full((1, 80, 80), 255, np.uint8))
    x = CropSampler([small, large], crop=8).batch(np.random.default_rng(0), 800)
    fraction_small = np.mean(x[:, 0, 0, 0] == 0.0)
    assert 0.06 < fraction_small < 0.12  # expected 8 / (8 + 80); by area it would be 1/101


def test_crop_pair_reference_is_the_sample_and_current_a_revisit(image_folder):
    sampler = CropSampler(list_images(image_folder), crop=32)
    ref, cur = sampler.pair(np.random.default_rng(9))
    np.testing.assert_array_equal(ref, sampler.sample(np.random.default_rng(9)))
    assert cur.shape == ref.shape and cur.dtype == np.float32
    assert np.corrcoef(ref.ravel(), cur.ravel())[0, 1] > 0.5
    assert np.abs(cur - ref).mean() > 0.005
    refs, curs = sampler.pairs(np.random.default_rng(9), 3)
    assert refs.shape == curs.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(refs[0], ref)


def test_pair_sampler_returns_aligned_crops(tmp_path):
    rng = np.random.default_rng(0)
    ref = np.rint(300 + 5000 * make_smooth_image(rng, 4, 40, 50)).astype(np.uint16)
    cur = (ref * 2 + 100).astype(np.uint16)  # pure radiometric change: same after stretching
    (tmp_path / "scene").mkdir()
    _write_tif(tmp_path / "scene" / "t0.tif", ref)
    _write_tif(tmp_path / "scene" / "t1.tif", cur)
    csv_path = _write_csv(tmp_path / "pairs.csv",
                          "reference,current\nscene/t0.tif, scene/t1.tif\n\n")
    sampler = PairSampler(csv_path, crop=24)
    assert sampler.paths == [(tmp_path / "scene/t0.tif", tmp_path / "scene/t1.tif")]
    for _ in range(5):
        a, b = sampler.pair(rng)
        assert a.shape == b.shape == (3, 24, 24)
        np.testing.assert_allclose(a, b, atol=1e-5)
        assert a.std() > 0.05


def test_pair_sampler_rejects_mismatched_shapes(tmp_path):
    _write_tif(tmp_path / "a.tif", np.zeros((3, 20, 20), np.uint8))
    _write_tif(tmp_path / "b.tif", np.zeros((3, 20, 21), np.uint8))
    _write_tif(tmp_path / "c.tif", np.zeros((4, 20, 20), np.uint8))
    for other in ("b.tif", "c.tif"):
        csv_path = _write_csv(tmp_path / "pairs.csv", f"a.tif,{other}\n")
        with pytest.raises(DataError, match=other):
            PairSampler(csv_path, crop=8)


@pytest.mark.parametrize("text", ["", "reference,current\n", "a.tif\n", "a.tif,a.tif,a.tif\n",
                                  "a.tif,\n", "a.tif,missing.tif\n"])
def test_pair_sampler_rejects_bad_pair_lists(tmp_path, text):
    _write_tif(tmp_path / "a.tif", np.zeros((3, 20, 20), np.uint8))
    with pytest.raises(DataError):
        PairSampler(_write_csv(tmp_path / "pairs.csv", text), crop=8)


def test_fixed_crops_are_identical_across_calls(image_folder):
    paths = list_images(image_folder)
    a = fixed_crops(paths, crop=32, n=5)
    b = fixed_crops(paths, crop=32, n=5)
    assert a.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, fixed_crops(paths, crop=32, n=5, seed=1))


def test_split_by_scene_keeps_scenes_disjoint():
    paths = [Path(f"scene_{i:02d}.tif") for i in range(25)]
    train, val = split_by_scene(paths, val_fraction=0.2, seed=3)
    assert not set(train) & set(val)
    assert sorted(train + val) == paths
    assert len(val) == 5
    assert split_by_scene(list(reversed(paths)), 0.2, seed=3) == (train, val)
    assert split_by_scene(paths, 0.2, seed=4) != (train, val)


def test_split_by_scene_puts_at_least_one_file_on_each_side():
    train, val = split_by_scene(["a.tif", "b.tif"], val_fraction=0.01)
    assert len(train) == len(val) == 1
    train, val = split_by_scene(["a.tif", "b.tif"], val_fraction=0.99)
    assert len(train) == len(val) == 1


def test_split_by_scene_with_single_file_warns_and_reuses_it():
    with pytest.warns(UserWarning, match="one image"):
        train, val = split_by_scene(["only.tif"])
    assert train == val == [Path("only.tif")]


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 2.0])
def test_split_by_scene_rejects_bad_fraction(fraction):
    with pytest.raises(DataError):
        split_by_scene(["a.tif", "b.tif"], val_fraction=fraction)


def test_samplers_reject_empty_input_and_bad_crop(image_folder):
    with pytest.raises(DataError):
        CropSampler([])
    with pytest.raises(DataError):
        split_by_scene([])
    with pytest.raises(DataError):
        CropSampler(list_images(image_folder), crop=0)


def _drawn_photo_share(sampler, n=4000):
    rng = np.random.default_rng(1)
    photo = [p.parent.name == data.PHOTO_KIND for p in sampler.paths]
    picks = [sampler._draw(rng).index for _ in range(n)]
    return np.mean([photo[i] for i in picks])


def test_photo_share_sets_the_share_of_crops_from_the_photo_folder(tmp_path):
    (tmp_path / "photo").mkdir()
    pixels = np.zeros((3, 64, 64), np.uint8)
    scenes = [_write_tif(tmp_path / f"scene{i}.tif", pixels) for i in range(2)]
    photos = [_write_tif(tmp_path / "photo" / f"p{i}.tif", pixels) for i in range(6)]
    # Alike by sqrt(area): 6 of 8 images are photos.
    assert abs(_drawn_photo_share(CropSampler(scenes + photos, crop=32)) - 0.75) < 0.03
    shared = CropSampler(scenes + photos, crop=32, photo_share=0.2)
    assert abs(_drawn_photo_share(shared) - 0.2) < 0.03
    assert _drawn_photo_share(CropSampler(scenes + photos, crop=32, photo_share=0.0)) == 0


def test_photo_share_changes_nothing_without_a_photo_folder(tmp_path):
    paths = [_write_tif(tmp_path / f"s{i}.tif", np.zeros((3, 32 + 16 * i, 48), np.uint8))
             for i in range(3)]
    plain, shared = CropSampler(paths, crop=16), CropSampler(paths, crop=16, photo_share=0.2)
    assert np.array_equal(plain._weights, shared._weights)
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(plain.batch(rng_a, 4), shared.batch(rng_b, 4))


@pytest.mark.parametrize("share", [-0.1, 1.0, 2])
def test_photo_share_outside_its_range_is_rejected(tmp_path, share):
    path = _write_tif(tmp_path / "s.tif", np.zeros((3, 32, 32), np.uint8))
    with pytest.raises(DataError, match="photo_share"):
        CropSampler([path], crop=16, photo_share=share)


def test_a_share_of_crop_pairs_is_unrelated(image_folder):
    sampler = CropSampler(list_images(image_folder), crop=32, unrelated_share=0.5)
    rng = np.random.default_rng(3)
    related = [np.corrcoef(*(a.ravel() for a in sampler.pair(rng)))[0, 1] for _ in range(40)]
    weak = np.mean(np.array(related) < 0.5)
    assert 0.2 < weak < 0.8
    with pytest.raises(DataError, match="unrelated_share"):
        CropSampler(list_images(image_folder), crop=32, unrelated_share=1.0)
