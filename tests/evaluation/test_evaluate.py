"""stcm eval: real byte counts, metrics, skipped codecs, BD-rate, outputs and the CLI."""
import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_smooth_image
from stcm.cli import main
from stcm.errors import OutputExistsError
from stcm.models.checkpoint import save_checkpoint
from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.evaluation.classical import (CODECS, YES, HevcIntra, Jpeg2000, ffmpeg_x265, get_codecs,
                                    parse_y4m_444, rgb_to_ycbcr, ycbcr_to_rgb)
from stcm.runtime.codec import Codec
from stcm.evaluation.evaluate import (CSV_COLUMNS, OUTPUTS, CodecInfo, EvalResult, ImageInfo,
                                   Measurement, StcmCodec, _bd_rates, bd_rate, centre_crop,
                                   evaluate, write_results)
from stcm.runtime.imageio import Raster, write_raster

imagecodecs = pytest.importorskip("imagecodecs")
pytest.importorskip("pytorch_msssim")
pytest.importorskip("bjontegaard")
pytest.importorskip("matplotlib")

RGB, MS = "rgb8.png", "ms16.tif"
RGB_SHAPE, MS_SHAPE = (3, 168, 176), (4, 64, 72)  # MS-SSIM needs sides >= 161: RGB only
QUALITIES = (0.0, 1.0)


# The test machine has 2 cores shared with other work; two OpenMP threads then spin-wait
# and run the tiny model about 50x slower than one (measured).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny() -> STCM:
    torch.manual_seed(0)
    return STCM(get_config("tiny")).eval()


class Identity:
    """A lossless stand-in: the raw samples are the stream."""

    name, label, parameter, sweep = "identity", "identity", "none", (1.0,)

    def supports(self, image):
        self.like = image
        return YES

    def encode(self, image, setting):
        return image.tobytes()

    def decode(self, data):
        return np.frombuffer(data, self.like.dtype).reshape(self.like.shape)


class Broken(Identity):
    name, label = "broken", "broken"

    def encode(self, image, setting):
        raise RuntimeError("library exploded")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval_images")
    rng = np.random.default_rng(7)
    rgb = np.rint(make_smooth_image(rng, *RGB_SHAPE) * 255).astype(np.uint8)
    Image.fromarray(np.moveaxis(rgb, 0, -1), "RGB").save(folder / RGB)
    ms = np.rint(300 + make_smooth_image(rng, *MS_SHAPE) * 9000).astype(np.uint16)
    write_raster(folder / MS, Raster(ms))
    return folder


@pytest.fixture(scope="module")
def codec():
    return Codec(_tiny(), tile_size=4)


@pytest.fixture(scope="module")
def result(folder, codec):
    codecs = [StcmCodec(codec, QUALITIES), *get_codecs(), Identity(), Broken()]
    return evaluate([folder / RGB, folder / MS], codecs, progress=False)


def _rows(result, image, codec):
    return [r for r in result.rows if r.image == image and r.codec == codec]


def _notes(result, image, codec):
    return [n.text for n in result.notes if n.image == image and n.codec == codec]


def test_every_codec_and_setting_is_measured_on_the_8bit_rgb_image(result):
    assert [i.name for i in result.images] == [RGB, MS]
    assert [r.setting for r in _rows(result, RGB, "stcm")] == list(QUALITIES)
    for name, cls in CODECS.items():
        if name == "hevc" and not ffmpeg_x265():
            assert _rows(result, RGB, name) == []
            assert "ffmpeg" in _notes(result, RGB, name)[0]
            continue
        assert [r.setting for r in _rows(result, RGB, name)] == list(cls.sweep), name
        assert not _notes(result, RGB, name), name


def test_a_16bit_4band_image_is_coded_by_stcm_only_and_the_others_say_why(result):
    assert [r.setting for r in _rows(result, MS, "stcm")] == list(QUALITIES)
    for name in CODECS:
        assert _rows(result, MS, name) == []
        (note,) = _notes(result, MS, name)
        assert note.startswith("skipped: "), note
        if name != "hevc" or ffmpeg_x265():
            assert "4" in note or "uint16" in note


def test_rates_are_real_byte_counts(result, folder, codec):
    image = np.moveaxis(np.asarray(Image.open(folder / RGB)), -1, 0)
    pixels = RGB_SHAPE[1] * RGB_SHAPE[2]
    for row in result.rows:
        assert row.bpp == 8 * row.bytes / (pixels if row.image == RGB else 64 * 72)
    # The image spans 0..255, so JPEG 2000's target PSNR is the setting itself.
    assert image.min() == 0 and image.max() == 255
    (j2k,) = [r for r in _rows(result, RGB, "jpeg2000") if r.setting == 30.0]
    stream = imagecodecs.jpeg2k_encode(np.ascontiguousarray(np.moveaxis(image, 0, -1)), level=30,
                                       codecformat="J2K", reversible=False)
    assert j2k.bpp == 8 * len(stream) / pixels
    (q1,) = [r for r in _rows(result, RGB, "stcm") if r.setting == 1.0]
    assert q1.bytes == len(codec.compress(image, 1.0))


def test_metrics(result):
    (exact,) = _rows(result, RGB, "identity")
    assert exact.psnr == math.inf and exact.mse == 0 and exact.ms_ssim == pytest.approx(1.0)
    assert exact.bpp == 24.0
    (exact16,) = _rows(result, MS, "identity")
    assert exact16.psnr == math.inf and math.isnan(exact16.ms_ssim)  # 64x72 < 161 px
    assert {i.name: i.peak for i in result.images} == {RGB: 255.0, MS: 65535.0}
    for row in _rows(result, RGB, "jpeg2000"):
        assert 0.5 < row.ms_ssim <= 1 and 20 < row.psnr < 60 and row.encode_s > 0
    for row in _rows(result, RGB, "stcm"):  # an untrained model: poor, but measured
        assert 0 < row.ms_ssim <= 1 and 0 < row.psnr < 60 and row.decode_s > 0
    j2k = sorted(_rows(result, RGB, "jpeg2000"), key=lambda r: r.setting)
    assert j2k[0].bpp < j2k[-1].bpp and j2k[0].psnr < j2k[-1].psnr
    assert all(math.isnan(r.ms_ssim) for r in _rows(result, MS, "stcm"))


def test_a_failing_codec_is_noted_not_fatal(result):
    assert _rows(result, RGB, "broken") == []
    assert "library exploded" in _notes(result, RGB, "broken")[0]


def test_bd_rate():
    curve = [(0.2, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.5)]
    assert bd_rate(curve, curve) == (0.0, None)
    assert bd_rate(curve, [(r * 1.1, d) for r, d in curve])[0] == pytest.approx(10.0)
    value, note = bd_rate(curve, curve[:2])
    assert math.isnan(value) and "needs 3" in note
    # A point that costs more bits for no more PSNR is left out, not a reason for NaN.
    dominated = [*curve[:2], (0.3, 28.0), (0.7, 30.0), *curve[2:]]
    value, note = bd_rate(dominated, curve)
    assert value == pytest.approx(0.0, abs=1e-9) and "2 dominated RD point(s) of the anchor" in note
    value, note = bd_rate(curve, [(0.2, 28.0), (0.5, 27.0), (1.0, 26.0)])
    assert math.isnan(value) and "needs 3" in note and "2 dominated" in note
    value, note = bd_rate(curve, [(4.0, 40.0), (5.0, 41.0), (6.0, 42.0)])
    assert math.isnan(value) and "do not overlap" in note
    value, note = bd_rate(curve, [(0.3, 33.0), (0.6, 36.0), (1.2, 40.0)])
    assert math.isfinite(value) and "only" in note
    assert bd_rate(curve, [*curve, (8.0, math.inf)]) == (0.0, None)  # lossless point: dropped


def test_images_of_two_sample_types_are_averaged_apart():
    curve = [(0.2, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.5)]
    images = [ImageInfo("a.png", "a.png", 3, 8, 8, "uint8", 255.0),
              ImageInfo("b.tif", "b.tif", 3, 8, 8, "uint16", 65535.0)]
    rows = []
    # The test codec saves 20 % on the 8-bit image and costs 10 % more on the 16-bit one, whose
    # PSNRs sit ~48 dB higher (65535 peak): one averaged curve would mix the two scales.
    for image, shift, factor in (("a.png", 0.0, 0.8), ("b.tif", 48.0, 1.1)):
        for codec, scale in (("jpeg2000", 1.0), ("test", factor)):
            for setting, (rate, psnr_db) in enumerate(curve):
                rows.append(Measurement(image, codec, float(setting), rate * scale,
                                        psnr_db + shift, math.nan, 0.0, 1.0, 1, 1.0))
    result = EvalResult(images, [CodecInfo("jpeg2000", "JPEG 2000", "q", ()),
                                 CodecInfo("test", "test", "q", ())], rows, [], "jpeg2000", {})
    _bd_rates(result)
    bd = result.bd_rate["test"]
    assert bd.per_group == pytest.approx({"uint8": -20.0, "uint16": 10.0})
    assert bd.per_image == pytest.approx({"a.png": -20.0, "b.tif": 10.0})
    assert math.isnan(bd.average) and bd.images == 2
    summary = result.summary()
    assert "uint8 (1 image(s), PSNR peak 255)" in summary and "-20.0 %" in summary
    assert "uint16 (1 image(s), PSNR peak 65535)" in summary and "+10.0 %" in summary
    curves = result.to_json()["curves"]
    assert set(curves) == {"uint8", "uint16"} and curves["uint16"]["test"][0]["psnr"] == 76.0


def test_bd_rates_of_the_evaluation(result):
    anchor = result.bd_rate["jpeg2000"]
    assert anchor.average == 0.0 and anchor.per_image == {RGB: 0.0} and anchor.images == 1
    assert math.isfinite(result.bd_rate["jpeg"].average)
    # Two stcm qualities are too few points: NaN, with the reason in the notes.
    assert math.isnan(result.bd_rate["stcm"].average)
    assert any("BD-rate" in n and "needs 3" in n for n in _notes(result, None, "stcm"))
    assert "jpeg2000" not in {n.codec for n in result.notes if "BD" in n.text}
    summary = result.summary()
    assert "JPEG 2000" in summary and "+0.0 %" in summary and "notes:" in summary
    assert "decode s/MP" in summary


def test_decode_time_per_megapixel_is_the_median_over_measurements(result):
    pixels = {i.name: i.height * i.width for i in result.images}
    rows = [r for r in result.rows if r.codec == "stcm"]
    expected = sorted(r.decode_s * 1e6 / pixels[r.image] for r in rows)
    assert result.decode_seconds_per_mp("stcm") == pytest.approx(
        (expected[(len(expected) - 1) // 2] + expected[len(expected) // 2]) / 2)
    assert result.decode_seconds_per_mp("stcm") > 0
    assert math.isnan(result.decode_seconds_per_mp("no such codec"))


def test_outputs_are_written_once_and_refused_after(result, tmp_path):
    out = tmp_path / "res"
    paths = write_results(result, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)
    with open(paths["results.csv"]) as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == len(result.rows) + 1

    def strict(constant):
        raise AssertionError(f"non-standard JSON constant {constant}")

    data = json.loads(paths["results.json"].read_text(), parse_constant=strict)
    assert len(data["rows"]) == len(result.rows) and data["bd_rate"]["jpeg2000"]["average"] == 0
    assert data["anchor"] == "jpeg2000" and data["notes"]
    assert data["versions"]["imagecodecs"] == imagecodecs.__version__
    assert paths["rd_psnr.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = paths["results.csv"].stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force"):
        write_results(result, out)
    assert paths["results.csv"].stat().st_mtime_ns == before
    write_results(result, out, force=True)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_cli(folder, tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "tiny.safetensors"
    save_checkpoint(_tiny(), ckpt)
    out = tmp_path / "cli"
    args = ["eval", str(folder), "--out", str(out), "--model", str(ckpt), "--qualities", "0,1",
            "--codecs", "jpeg2000,webp", "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "JPEG 2000" in printed and "BD-rate" in printed and "webp: skipped" in printed
    with open(out / "results.csv") as f:
        assert {r["codec"] for r in csv.DictReader(f)} == {"stcm", "jpeg2000", "webp"}
    assert main(args) == 2  # refused before any coding
    assert "--force" in capsys.readouterr().err
    assert main([*args, "--qualities", "2", "--force"]) == 2
    assert "[0, 1]" in capsys.readouterr().err
    assert main([*args[:-3], "--codecs", "png", "--force"]) == 2
    assert "unknown codec" in capsys.readouterr().err
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bjontegaard" else real(name, *a))
    assert main([*args, "--force"]) == 2
    assert "pip install 'stcm[eval]'" in capsys.readouterr().err


def test_centre_crop():
    image = np.arange(2 * 10 * 7).reshape(2, 10, 7)
    assert centre_crop(image, 4).tolist() == image[:, 3:7, 1:5].tolist()
    assert centre_crop(image, 64).shape == image.shape and centre_crop(image, None) is image


def test_unavailable_codec_is_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(Jpeg2000, "_available", lambda self: False)
    support = Jpeg2000().supports(np.zeros((3, 8, 8), np.uint8))
    assert not support and "not available" in support.reason


def test_full_range_ycbcr_for_hevc():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)).astype(int) - rgb).max() <= 1
    corners = np.array([[0, 255], [0, 255], [0, 255]], np.uint8)[:, None, :]  # black, white
    assert rgb_to_ycbcr(corners)[:, 0].tolist() == [[0, 255], [128, 128], [128, 128]]


def test_y4m_parsing():
    planes = np.arange(3 * 2 * 5, dtype=np.uint8).reshape(3, 2, 5)
    stream = b"YUV4MPEG2 W5 H2 F25:1 Ip A1:1 C444 XYSCSS=444\nFRAME\n" + planes.tobytes()
    assert np.array_equal(parse_y4m_444(stream), planes)
    with pytest.raises(RuntimeError, match="4:4:4"):
        parse_y4m_444(stream.replace(b"C444", b"C420jpeg"))


@pytest.mark.skipif(not ffmpeg_x265(), reason=f"HEVC intra needs ffmpeg with libx265: "
                    f"{ffmpeg_x265().reason}")
def test_hevc_intra_round_trip():
    rgb = np.rint(make_smooth_image(np.random.default_rng(3), 3, 72, 88) * 255).astype(np.uint8)
    hevc = HevcIntra()
    assert hevc.supports(rgb)
    data = hevc.encode(rgb, 22)
    assert data[:4] == b"\x00\x00\x00\x01"  # Annex B start code: a raw elementary stream
    back = hevc.decode(data)
    assert back.shape == rgb.shape and back.dtype == np.uint8
    mse = np.mean((back.astype(float) - rgb) ** 2)
    assert 10 * np.log10(255 ** 2 / mse) > 35
    assert len(hevc.encode(rgb, 42)) < len(data)
