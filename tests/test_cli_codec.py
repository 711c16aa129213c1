"""stcm compress / decompress / info on real files: geo metadata kept, outputs protected."""
import json

import numpy as np
import pytest
import rasterio

from stcm import SAMPLES_DIR
from stcm.cli import main

S2 = SAMPLES_DIR / "sentinel2_b234_8_uint16.tif"
NEON = SAMPLES_DIR / "neon_osbs_rgb8.tif"


def test_geotiff_16bit_multiband_round_trip_keeps_georeferencing(tmp_path, capsys):
    # The built-in model: the resemblance check below needs a model trained on real 16-bit data.
    packed, back = tmp_path / "s2.stcm", tmp_path / "s2_back.tif"
    assert main(["compress", str(S2), str(packed), "--quality", "0.9"]) == 0
    assert "bpp" in capsys.readouterr().out
    assert main(["decompress", str(packed), str(back)]) == 0
    with rasterio.open(S2) as a, rasterio.open(back) as b:
        assert (b.count, b.height, b.width, b.dtypes) == (a.count, a.height, a.width, a.dtypes)
        assert b.crs == a.crs and b.transform == a.transform and b.nodata == a.nodata
        assert b.descriptions == a.descriptions
        original, decoded = a.read().astype(float), b.read().astype(float)
    assert np.corrcoef(original.ravel(), decoded.ravel())[0, 1] > 0.95


def test_png_round_trip_and_info(trained_tiny, image_folder, tmp_path, capsys):
    src = image_folder / "rgb_a.png"
    packed, back = tmp_path / "a.stcm", tmp_path / "a.png"
    assert main(["compress", str(src), str(packed), "--model", str(trained_tiny)]) == 0
    assert main(["decompress", str(packed), str(back), "--model", str(trained_tiny)]) == 0
    with rasterio.open(src) as a, rasterio.open(back) as b:
        assert (b.count, b.height, b.width, b.dtypes) == (a.count, a.height, a.width, a.dtypes)
    capsys.readouterr()
    assert main(["info", str(packed), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "container" and info["height"] == 96 and info["bands"] == 3
    assert {s["kind"] for s in info["streams"]} == {"z", "y"}
    assert info["bytes"] == packed.stat().st_size


def test_outputs_are_never_overwritten_without_force(trained_tiny, tmp_path, capsys):
    packed = tmp_path / "n.stcm"
    packed.write_bytes(b"precious")
    assert main(["compress", str(NEON), str(packed), "--model", str(trained_tiny)]) == 2
    assert "--force" in capsys.readouterr().err and packed.read_bytes() == b"precious"
    assert main(["compress", str(NEON), str(packed), "--model", str(trained_tiny),
                 "--force"]) == 0
    assert packed.read_bytes()[:4] == b"STCM"
    assert main(["decompress", str(packed), str(packed), "--model", str(trained_tiny),
                 "--force"]) == 2
    assert "input" in capsys.readouterr().err and packed.read_bytes()[:4] == b"STCM"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_decompressing_garbage_reports_the_problem(trained_tiny, tmp_path, capsys):
    bad = tmp_path / "bad.stcm"
    bad.write_bytes(NEON.read_bytes()[:200])
    assert main(["decompress", str(bad), str(tmp_path / "o.tif"), "--model",
                 str(trained_tiny)]) == 2
    assert "TIFF" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_demo_runs_the_builtin_model_on_the_samples(capsys):
    assert main(["demo", "--quality", "0.5"]) == 0
    out = capsys.readouterr().out
    for name in ("neon_osbs_rgb8.tif", "sentinel2_b234_8_uint16.tif"):
        line = next(line for line in out.splitlines() if line.startswith(name))
        assert "bpp" in line and "PSNR" in line and "decode" in line


def test_a_series_on_the_command_line(trained_tiny, tmp_path, capsys):
    from stcm.models.revisit import synthetic_revisit
    from stcm.runtime.imageio import Raster, read_raster, write_raster

    first = read_raster(NEON)
    later = np.rint(synthetic_revisit(first.pixels / 255.0, np.random.default_rng(0)) * 255)
    write_raster(tmp_path / "later.tif", Raster(later.astype(np.uint8), first.georef))
    model = ["--model", str(trained_tiny)]
    a, b = tmp_path / "first.stcm", tmp_path / "later.stcm"
    assert main(["compress", str(NEON), str(a), *model]) == 0
    # --temporal on: with auto, a reference that saves nothing gives a file coded alone.
    assert main(["compress", str(tmp_path / "later.tif"), str(b), "--reference", str(a),
                 "--temporal", "on", *model]) == 0
    capsys.readouterr()
    assert main(["decompress", str(b), str(tmp_path / "x.tif"), *model]) == 2
    assert "reference" in capsys.readouterr().err
    assert main(["decompress", str(b), str(tmp_path / "x.tif"), "--reference", str(a),
                 *model]) == 0
    assert main(["compress", str(NEON), str(tmp_path / "c.stcm"), "--reference", str(b),
                 *model]) == 2
    assert "first image" in capsys.readouterr().err
    assert main(["compress", str(S2), str(tmp_path / "d.stcm"), "--reference", str(a),
                 *model]) == 2


# -- issue 17: nothing lost on the way through a container -------------------------------------
@pytest.mark.parametrize("cog", [False, True])
def test_a_rich_geotiff_round_trips_with_every_field_equal(tmp_path, cog):
    from conftest import raster_fields, write_rich_geotiff

    source = write_rich_geotiff(tmp_path / "rich.tif")
    packed, back = tmp_path / "rich.stcm", tmp_path / "back.tif"
    assert main(["compress", str(source), str(packed), "--quality", "0.9"]) == 0
    assert main(["decompress", str(packed), str(back)] + ["--cog"] * cog) == 0
    want, got = raster_fields(source), raster_fields(back)
    assert {k: got[k] for k in want if want[k] != got[k]} == {}
    with rasterio.open(source) as a, rasterio.open(back) as b:
        original, decoded = a.read(), b.read()
        if cog:
            assert b.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    nodata = original == 0
    assert nodata.sum() > 3000
    np.testing.assert_array_equal(decoded == 0, nodata)  # every nodata sample, nothing else
    valid = original[~nodata].astype(float), decoded[~nodata].astype(float)
    assert np.corrcoef(*valid)[0, 1] > 0.95


def test_cog_is_refused_for_other_outputs_than_geotiff(tmp_path, capsys):
    packed = tmp_path / "n.stcm"
    assert main(["compress", str(NEON), str(packed), "--quality", "0"]) == 0
    assert main(["decompress", str(packed), str(tmp_path / "n.png"), "--cog"]) == 2
    assert ".tif" in capsys.readouterr().err and not (tmp_path / "n.png").exists()


def test_float_raster_with_nan_nodata_round_trips(tmp_path):
    from conftest import make_smooth_image

    pixels = (make_smooth_image(np.random.default_rng(5), 2, 64, 80) * 40 - 10).astype(np.float32)
    pixels[:, 10:30, 5:25] = np.nan
    pixels[1, 50, 60] = np.nan
    source, packed, back = tmp_path / "f.tif", tmp_path / "f.stcm", tmp_path / "b.tif"
    with rasterio.open(source, "w", driver="GTiff", width=80, height=64, count=2,
                       dtype="float32", nodata=float("nan"), crs="EPSG:32633",
                       transform=rasterio.Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5e6)) as ds:
        ds.write(pixels)
    assert main(["compress", str(source), str(packed)]) == 0
    assert main(["decompress", str(packed), str(back)]) == 0
    with rasterio.open(back) as ds:
        assert np.isnan(ds.nodata)
        decoded = ds.read()
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(pixels))
    valid = ~np.isnan(pixels)
    assert np.corrcoef(pixels[valid], decoded[valid])[0, 1] > 0.95


def test_gcp_georeferenced_image_with_a_mask_band_round_trips(tmp_path):
    from conftest import raster_fields, write_gcp_rpc_image

    source = write_gcp_rpc_image(tmp_path / "l1.tif", gcps=True, rpcs=True)
    invalid = np.zeros((30, 40), bool)
    invalid[:, :7] = True  # an image edge
    with rasterio.open(source, "r+") as ds:
        ds.write_mask(np.where(invalid, 0, 255).astype(np.uint8))
    packed, back = tmp_path / "l1.stcm", tmp_path / "b.tif"
    assert main(["compress", str(source), str(packed)]) == 0
    assert main(["decompress", str(packed), str(back)]) == 0
    want, got = raster_fields(source), raster_fields(back)
    assert {k: got[k] for k in want if want[k] != got[k]} == {}
    with rasterio.open(back) as ds:
        np.testing.assert_array_equal(ds.dataset_mask() == 0, invalid)
