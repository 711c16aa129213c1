"""read_raster/write_raster: exact round trips with georeferencing, and safe, atomic output."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS

from stcm import SAMPLES_DIR
from stcm.errors import DataError, OutputExistsError
from stcm.runtime import imageio
from stcm.runtime.imageio import Georeference, Raster, read_raster, same_file, write_raster

UTM33 = CRS.from_epsg(32633).to_wkt()
TRANSFORM = (10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def _random(rng, dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.normal(0, 1000, shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


def _assert_same(back: Raster, raster: Raster):
    assert back.pixels.dtype == raster.pixels.dtype
    np.testing.assert_array_equal(back.pixels, raster.pixels)  # NaN == NaN here
    assert back.band_descriptions == raster.band_descriptions
    if raster.georef is None:
        assert back.georef is None
        return
    want, got = raster.georef, back.georef
    assert got is not None
    assert (got.crs is None) == (want.crs is None)
    if want.crs is not None:
        assert CRS.from_user_input(got.crs) == CRS.from_user_input(want.crs)
    assert got.transform == want.transform
    if want.nodata is not None and math.isnan(want.nodata):
        assert got.nodata is not None and math.isnan(got.nodata)
    else:
        assert got.nodata == want.nodata


def _round_trip(tmp_path, raster: Raster, name: str) -> Raster:
    path = write_raster(tmp_path / name, raster)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temp or sidecar debris
    return read_raster(path)


@pytest.mark.parametrize("shape", [(3, 40, 50), (3, 300, 260)])  # striped and tiled
def test_tif_round_trip_is_exact_uint8_rgb(tmp_path, shape):
    raster = Raster(_random(np.random.default_rng(0), np.uint8, shape))
    _assert_same(_round_trip(tmp_path, raster, "rgb.tif"), raster)


def test_tif_round_trip_keeps_crs_transform_nodata_and_band_names_uint16(tmp_path):
    pixels = _random(np.random.default_rng(1), np.uint16, (5, 33, 47))
    raster = Raster(pixels, Georeference(UTM33, TRANSFORM, 0.0),
                    ("B2", "B3", None, "B8", "B11"))
    _assert_same(_round_trip(tmp_path, raster, "ms.tiff"), raster)


def test_crs_is_read_as_an_epsg_code_when_exact_and_as_wkt_otherwise(tmp_path):
    pixels = _random(np.random.default_rng(3), np.uint8, (1, 16, 16))
    custom = CRS.from_proj4("+proj=tmerc +lat_0=0 +lon_0=13.1 +k=0.9996 +x_0=500000 +y_0=0 "
                            "+datum=WGS84 +units=m +no_defs")
    for i, (crs, stored) in enumerate(((UTM33, "EPSG:32633"), (custom.to_wkt(), None))):
        (tmp_path / str(i)).mkdir()
        back = _round_trip(tmp_path / str(i), Raster(pixels, Georeference(crs, TRANSFORM, None)),
                           "crs.tif")
        if stored:
            assert back.georef.crs == stored
        else:
            assert back.georef.crs.startswith(("PROJCS", "PROJCRS"))
        assert CRS.from_user_input(back.georef.crs) == CRS.from_user_input(crs)


def test_tif_round_trip_keeps_negative_int16(tmp_path):
    pixels = _random(np.random.default_rng(2), np.int16, (1, 30, 20))
    assert pixels.min() < 0
    raster = Raster(pixels, Georeference(None, TRANSFORM, -32768.0))
    _assert_same(_round_trip(tmp_path, raster, "dem.tif"), raster)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tif_round_trip_keeps_float_with_nan_nodata(tmp_path, dtype):
    pixels = _random(np.random.default_rng(3), dtype, (2, 25, 31))
    pixels[:, :3, :4] = np.nan
    raster = Raster(pixels, Georeference(UTM33, TRANSFORM, float("nan")))
    _assert_same(_round_trip(tmp_path, raster, "f.tif"), raster)


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
def test_png_round_trip_is_exact_gray_rgb_rgba(tmp_path, bands):
    raster = Raster(_random(np.random.default_rng(4), np.uint8, (bands, 21, 34)))
    _assert_same(_round_trip(tmp_path, raster, "x.png"), raster)


def test_png_round_trip_is_exact_uint16_with_nodata(tmp_path):
    raster = Raster(_random(np.random.default_rng(5), np.uint16, (3, 9, 8)),
                    Georeference(None, None, 7.0))
    _assert_same(_round_trip(tmp_path, raster, "x.png"), raster)


def test_png_warns_when_georeferencing_is_lost(tmp_path):
    raster = Raster(np.zeros((3, 4, 4), np.uint8), Georeference(UTM33, TRANSFORM, None))
    with pytest.warns(UserWarning, match=r"CRS/transform.*\.tif"):
        write_raster(tmp_path / "x.png", raster)
    assert read_raster(tmp_path / "x.png").georef is None


@pytest.mark.parametrize("pixels", [np.zeros((5, 8, 8), np.uint8),
                                    np.zeros((3, 8, 8), np.float32)])
def test_png_refuses_what_it_cannot_hold_and_suggests_tif(tmp_path, pixels):
    with pytest.raises(DataError, match=r"\.tif"):
        write_raster(tmp_path / "x.png", Raster(pixels))
    assert not any(tmp_path.iterdir())


def test_jp2_round_trip_is_lossless(tmp_path):
    pixels = _random(np.random.default_rng(6), np.int16, (2, 40, 30))
    raster = Raster(pixels, Georeference(UTM33, TRANSFORM, None))
    _assert_same(_round_trip(tmp_path, raster, "x.jp2"), raster)


def test_jp2_and_jpeg_refuse_unsupported_output(tmp_path):
    with pytest.raises(DataError, match=r"\.tif"):
        write_raster(tmp_path / "x.jp2", Raster(np.zeros((1, 8, 8), np.float32)))
    with pytest.raises(DataError, match="lossily"):
        write_raster(tmp_path / "x.jpg", Raster(np.zeros((3, 8, 8), np.uint8)))
    with pytest.raises(DataError, match="suffix"):
        write_raster(tmp_path / "x.bmp", Raster(np.zeros((3, 8, 8), np.uint8)))
    assert not any(tmp_path.iterdir())


def test_overwrite_is_refused_without_force_and_allowed_with_it(tmp_path):
    path = tmp_path / "out.tif"
    write_raster(path, Raster(np.zeros((1, 4, 4), np.uint8)))
    ones = Raster(np.ones((1, 4, 4), np.uint8))
    with pytest.raises(OutputExistsError, match=r"out\.tif.*--force"):
        write_raster(path, ones)
    assert read_raster(path).pixels.max() == 0
    write_raster(path, ones, force=True)
    assert read_raster(path).pixels.min() == 1


def test_writing_over_the_source_is_refused_even_with_force(tmp_path):
    source = write_raster(tmp_path / "in.tif", Raster(np.zeros((1, 4, 4), np.uint8)))
    before = source.read_bytes()
    with pytest.raises(OutputExistsError, match="input"):
        write_raster(tmp_path / "sub" / ".." / "in.tif", read_raster(source), force=True,
                     source=source)
    assert source.read_bytes() == before
    assert same_file(tmp_path / "sub" / ".." / "in.tif", source)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="complex"):
        write_raster(tmp_path / "c.tif", Raster(np.zeros((1, 4, 4), np.complex64)))
    with pytest.raises(DataError, match="nodata"):
        write_raster(tmp_path / "n.tif", Raster(np.zeros((1, 4, 4), np.uint8),
                                                Georeference(None, None, -1.0)))

    def half_write(tmp, driver, raster, cog=False, blocks=None):  # a failure after bytes hit the disk (disk full)
        tmp.write_bytes(b"II*\0partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(imageio, "_write", half_write)
    with pytest.raises(DataError, match="No space"):
        write_raster(tmp_path / "p.tif", Raster(np.zeros((1, 4, 4), np.uint8)))
    assert not any(tmp_path.iterdir())


def test_missing_or_unreadable_input_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_raster(tmp_path / "missing.tif")
    (tmp_path / "junk.tif").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"junk\.tif"):
        read_raster(tmp_path / "junk.tif")


def test_plain_png_has_no_georef_and_palette_expands_to_rgb(tmp_path):
    from PIL import Image

    index = np.arange(12, dtype=np.uint8).reshape(3, 4) % 3
    image = Image.fromarray(index, "L").convert("P")
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    image.save(tmp_path / "pal.png")
    raster = read_raster(tmp_path / "pal.png")
    assert raster.georef is None and raster.pixels.shape == (3, 3, 4)
    np.testing.assert_array_equal(raster.pixels[:, 0, 1], [40, 50, 60])


@pytest.mark.parametrize("name, dtype, bands, epsg", [
    ("neon_osbs_rgb8.tif", np.uint8, 3, 32617),
    ("sentinel2_b234_8_uint16.tif", np.uint16, 4, 32618),
])
def test_bundled_samples_read_with_crs_and_round_trip_exactly(tmp_path, name, dtype, bands,
                                                              epsg):
    raster = read_raster(SAMPLES_DIR / name)
    assert raster.pixels.dtype == dtype and raster.bands == bands
    assert raster.georef.crs == f"EPSG:{epsg}"
    assert raster.georef.transform is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a .tif keeps everything: no loss warning
        back = _round_trip(tmp_path, raster, name)
    _assert_same(back, raster)
    assert back.georef == raster.georef  # bit-identical WKT and coefficients


# -- issue 17: everything rasterio exposes survives a read and a write -------------------------
def test_geotiff_metadata_round_trips_field_by_field(tmp_path):
    from conftest import raster_fields, write_rich_geotiff

    source = write_rich_geotiff(tmp_path / "rich.tif")
    raster = read_raster(source)
    assert raster.metadata.scales == (0.01, 0.01, 0.01, 0.02)  # the radiometric calibration
    assert raster.metadata.tags["AREA_OR_POINT"] == "Point"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing lost, so no warning
        write_raster(tmp_path / "back.tif", raster)
    want, got = raster_fields(source), raster_fields(tmp_path / "back.tif")
    assert [k for k in want if want[k] != got[k]] == []
    np.testing.assert_array_equal(read_raster(tmp_path / "back.tif").pixels, raster.pixels)


@pytest.mark.parametrize("gcps, rpcs", [(True, False), (False, True), (True, True)])
def test_an_image_georeferenced_by_gcps_or_rpcs_only_keeps_them(tmp_path, gcps, rpcs):
    from conftest import raster_fields, write_gcp_rpc_image

    source = write_gcp_rpc_image(tmp_path / "l1.tif", gcps, rpcs)
    raster = read_raster(source)
    assert raster.georef.transform is None and bool(raster.georef.gcps) == gcps
    assert (raster.georef.rpcs is not None) == rpcs
    write_raster(tmp_path / "back.tif", raster)
    want, got = raster_fields(source), raster_fields(tmp_path / "back.tif")
    assert [k for k in want if want[k] != got[k]] == []
    assert read_raster(tmp_path / "back.tif").georef == raster.georef


def test_a_mask_band_is_read_as_missing_pixels_and_written_back(tmp_path):
    pixels = _random(np.random.default_rng(7), np.uint16, (2, 20, 24))
    invalid = np.zeros((20, 24), bool)
    invalid[3:9, 5:20] = True
    with rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", width=24, height=20, count=2,
                       dtype="uint16", crs=CRS.from_epsg(32633),
                       transform=rasterio.Affine(*TRANSFORM)) as ds:
        ds.write(pixels)
        ds.write_mask(np.where(invalid, 0, 255).astype(np.uint8))
    raster = read_raster(tmp_path / "m.tif")
    np.testing.assert_array_equal(raster.missing, invalid)
    assert raster.metadata.dataset_mask
    write_raster(tmp_path / "back.tif", raster)
    with rasterio.open(tmp_path / "back.tif") as ds:
        assert ds.mask_flag_enums == ([rasterio.enums.MaskFlags.per_dataset],) * 2
        np.testing.assert_array_equal(ds.dataset_mask() == 0, invalid)


def test_cog_output_is_a_cloud_optimized_geotiff_with_overviews(tmp_path):
    from conftest import raster_fields, write_rich_geotiff

    source = write_rich_geotiff(tmp_path / "rich.tif", 300, 280)
    raster = read_raster(source)
    write_raster(tmp_path / "cog.tif", raster, cog=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cog.tif", "rich.tif"]
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    want, got = raster_fields(source), raster_fields(tmp_path / "cog.tif")
    assert [k for k in want if want[k] != got[k]] == []
    np.testing.assert_array_equal(read_raster(tmp_path / "cog.tif").pixels, raster.pixels)
    with pytest.raises(DataError, match=r"COG|Cloud-Optimized.*\.tif"):
        write_raster(tmp_path / "x.png", Raster(raster.pixels[:3]), cog=True)
    assert not (tmp_path / "x.png").exists()
