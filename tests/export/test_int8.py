"""The int8 synthesis (``stcm export --int8-synthesis``): only 8-bit images' pixels change,
a little; latents never."""
import numpy as np
import pytest

from stcm import SAMPLES_DIR
from stcm.cli import main
from stcm.errors import ConfigError
from stcm.export.onnx import export_engine
from stcm.manifest import INT8_SYNTHESIS, read_manifest
from stcm.runtime.codec import Codec, default_model_path
from stcm.runtime.imageio import read_raster


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    """(fp32 codec, int8 codec, int8 engine folder), both engines of the built-in model:
    quantization only means something for trained weights."""
    root = tmp_path_factory.mktemp("int8")
    export_engine(default_model_path(), root / "fp32", progress=False)
    assert main(["export", "default", str(root / "int8"), "--int8-synthesis"]) == 0
    options = {"threads": 1}
    return (Codec(engine=root / "fp32", engine_options=options, progress=False),
            Codec(engine=root / "int8", engine_options=options, progress=False), root / "int8")


def _stages(codec, data):
    """The stages one decode of ``data`` runs, and its (pixels, latents)."""
    ran, run = [], codec.backend.run

    def spy(stage, *inputs):
        ran.append(stage)
        return run(stage, *inputs)

    codec.backend.run = spy
    try:
        result = codec._decompress(data, None)
    finally:
        del codec.backend.run
    return set(ran), result


def test_the_manifest_records_the_int8_stage(engines, capsys):
    capsys.readouterr()
    assert main(["info", str(engines[2])]) == 0
    assert "synthesis_int8.onnx      int8 (run for 8-bit images)" in capsys.readouterr().out
    entries = read_manifest(engines[2])["stages"]
    assert entries[INT8_SYNTHESIS]["precision"] == "int8"
    assert entries[INT8_SYNTHESIS]["file"] != entries["synthesis"]["file"]
    assert "precision" not in entries["synthesis"]  # the fp32 graph stays for other images


def test_8_bit_images_decode_through_int8_with_the_same_latents(engines):
    fp32, int8, _ = engines
    image = read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels[:, :256, :256]
    data = fp32.compress(image, 0.75)
    assert int8.compress(image, 0.75) == data  # g_s is not on the encoder's path
    ran_fp32, (want, latents) = _stages(fp32, data)
    ran_int8, (got, latents8) = _stages(int8, data)
    assert INT8_SYNTHESIS in ran_int8 and "synthesis" not in ran_int8
    assert INT8_SYNTHESIS not in ran_fp32
    for a, b in zip(latents, latents8):
        np.testing.assert_array_equal(a, b)
    diff = got.pixels.astype(float) - want.pixels.astype(float)
    assert 0 < np.abs(diff).mean() < 1.5  # it does change pixels, by about a level
    assert 10 * np.log10(255 ** 2 / np.mean(diff ** 2)) > 40


def test_16_bit_images_keep_the_float_synthesis(engines):
    fp32, int8, _ = engines
    image = read_raster(SAMPLES_DIR / "sentinel2_b234_8_uint16.tif").pixels
    data = fp32.compress(image, 0.75)
    ran, (pixels, _) = _stages(int8, data)
    assert "synthesis" in ran and INT8_SYNTHESIS not in ran
    np.testing.assert_array_equal(pixels.pixels, fp32.decompress(data))


def test_int8_synthesis_is_refused_with_tensorrt(tmp_path):
    with pytest.raises(ConfigError, match="int8"):
        export_engine(default_model_path(), tmp_path / "e", tensorrt=True, int8_synthesis=True)
