"""Encode-time latent refinement: it lowers the model's RD loss on real imagery, the refined
stream decodes exactly with a plain decoder and costs less in real bytes + distortion, no
weight moves, and bad settings are refused."""
import numpy as np
import pytest
import torch

import stcm
from stcm.cli import main
from stcm.errors import ConfigError
from stcm.export.onnx import export_engine
from stcm.bands import normalize, to_band_groups
from stcm.models.codec import STCM, pad_image
from stcm.config import get_config
from stcm.models.quant import straight_through
from stcm.models.refine import MAX_PIXELS, rd_estimate, refine_latents
from stcm.runtime.codec import Codec
from stcm.runtime.imageio import Raster, read_raster, write_raster

QUALITY = 0.5


# Refinement is many small backward passes: on a busy 2-core machine two intra-op threads
# wait on each other far longer than one thread computes (measured: 35x slower with two
# threads while a training run held both cores).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def codec():
    return Codec()  # the built-in model: a trained entropy model, as refinement meets it


@pytest.fixture(scope="module")
def image():
    """A 64x64 crop of the bundled real aerial sample (uint8 RGB)."""
    pixels = read_raster(stcm.SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels
    return np.ascontiguousarray(pixels[:, :64, :64])


def _latents(codec, image, quality=QUALITY):
    """(x, y, z, gains) of the image's first band group, as the encoder computes them."""
    x = torch.from_numpy(to_band_groups(normalize(image)[0]))[:1]
    gains = tuple(torch.from_numpy(g) for g in codec.tables.gains(quality))
    with torch.no_grad():
        y = codec.model.g_a(pad_image(x)) * gains[0]
        z = codec.model.h_a(y)
    return x, y, z, gains


def _rd_cost(codec, image, data, quality=QUALITY):
    """Real cost: container bits per pixel + lambda * 255^2 * MSE of the decoded image in
    [0, 1] (the training loss, measured on what a plain decoder returns)."""
    decoded = Codec().decompress(data)
    mse = np.mean((decoded.astype(np.float64) - image) ** 2) / 255 ** 2
    lam = float(codec.model.gain.lambdas(torch.tensor([quality]))[0])
    return 8 * len(data) / (image.shape[1] * image.shape[2]) + lam * 255 ** 2 * mse


def test_refinement_lowers_the_estimated_rd_loss_of_a_real_image(codec, image):
    x, y, z, gains = _latents(codec, image)
    result = refine_latents(codec.model, x, QUALITY, y, z, 10, gains=gains)
    assert result.final.loss < 0.99 * result.initial.loss  # measured: about -2 %
    assert result.best_step > 0 and not torch.equal(result.y, y)
    # the reported scores are the estimate of the latents returned, and of the start
    again = rd_estimate(codec.model, x, QUALITY, result.y, result.z, gains=gains)
    assert again == result.final
    assert rd_estimate(codec.model, x, QUALITY, y, z, gains=gains) == result.initial


def test_refinement_never_returns_latents_worse_than_the_start(codec, image):
    x, y, z, gains = _latents(codec, image)
    # a learning rate that throws every iterate off: the starting latents come back
    result = refine_latents(codec.model, x, QUALITY, y, z, 3, gains=gains, lr=20.0)
    assert result.best_step == 0 and result.final == result.initial
    assert torch.equal(result.y, y) and torch.equal(result.z, z)


def test_refined_stream_decodes_exactly_with_a_plain_codec_and_costs_less(codec, image):
    plain = codec.compress(image, QUALITY)
    refined, enc_latents = codec._compress(image, QUALITY, None, None, None, refine=20)
    # a fresh codec that knows nothing of refinement decodes the refined latent bit for bit
    decoder = Codec()
    decoded, dec_latents = decoder._decompress(refined, None)
    assert all(np.array_equal(a, b) for a, b in zip(enc_latents, dec_latents))
    again = Codec(tile_batch=1).decompress(refined)  # another decoder, another batching
    assert np.array_equal(decoded.pixels, again) and again.shape == image.shape
    # the real coded bytes + distortion beat plain coding (measured: -3.7 %)
    assert _rd_cost(codec, image, refined) < 0.99 * _rd_cost(codec, image, plain)


def test_refinement_changes_no_weight_buffer_or_mode(codec, image):
    model = codec.model
    x, y, z, gains = _latents(codec, image)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.named_parameters()}
    model.train()  # refinement runs in eval mode and must hand the mode back
    try:
        refine_latents(model, x, QUALITY, y, z, 3, gains=gains)
        assert model.training
    finally:
        model.eval()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # ActQuant exponents too
    assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
    assert not any("straight_through" in vars(m) for m in model.modules())


def test_straight_through_keeps_every_value_and_passes_gradients():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    z = torch.randn(1, 24, 2, 2) * 3
    y = torch.round(torch.randn(1, 32, 8, 8) * 4)
    with torch.no_grad():
        hyper = model.h_s(torch.round(z))
        means, scales = model.entropy_parameters(y, hyper)
    z_var = torch.round(z).requires_grad_(True)
    with straight_through(model):
        hyper_st = model.h_s(z_var)
        means_st, scales_st = model.entropy_parameters(y, hyper_st)
        (means_st.sum() + scales_st.sum()).backward()
    assert torch.equal(hyper, hyper_st.detach()) and torch.equal(means, means_st.detach())
    assert torch.equal(scales, scales_st.detach())
    assert z_var.grad.abs().sum() > 0  # eval mode alone gives zero: round's gradient


def test_refine_zero_is_the_plain_encoder(codec, image):
    assert codec.compress(image, QUALITY, refine=0) == codec.compress(image, QUALITY)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3", None])
def test_bad_refine_values_raise_config_error(codec, image, bad):
    with pytest.raises(ConfigError):
        codec.compress(image, QUALITY, refine=bad)


def test_bad_refinement_settings_raise_config_error(codec, image):
    x, y, z, _ = _latents(codec, image)
    with pytest.raises(ConfigError):
        refine_latents(codec.model, x, QUALITY, y, z, -2)
    with pytest.raises(ConfigError):
        refine_latents(codec.model, x, QUALITY, y, z, 2, method="adam")
    with pytest.raises(ConfigError):
        refine_latents(codec.model, x, 1.5, y, z, 2)


def test_band_groups_above_the_memory_limit_are_refused_before_any_work(codec):
    side = int(MAX_PIXELS ** 0.5)
    big = np.zeros((3, side + 1, side), np.uint8)
    with pytest.raises(ConfigError, match="memory"):
        codec.compress(big, QUALITY, refine=1)


def test_engines_refuse_refinement_but_decode_refined_streams(codec, image, tmp_path):
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    engine = tmp_path / "engine"
    export_engine(model, engine, progress=False)
    small = image[:, :32, :32]
    with pytest.raises(ConfigError, match="checkpoint"):
        Codec(engine=engine).compress(small, QUALITY, refine=2)
    # a stream refined with the checkpoint decodes on the engine of the same model
    data = Codec(model).compress(small, QUALITY, refine=2)
    assert np.array_equal(Codec(engine=engine).decompress(data), Codec(model).decompress(data))


def test_refined_series_decode_with_their_temporal_reference(codec, image):
    first, later = image[:, :32, :32], image[:, 32:, 32:]
    blobs = codec.compress_series([first, later], QUALITY, refine=3)
    assert blobs[1] != codec.compress_series([first, later], QUALITY)[1]  # it refined
    decoded = Codec().decompress_series(blobs)
    assert [d.shape for d in decoded] == [first.shape, later.shape]
    assert np.array_equal(decoded[1], Codec().decompress(blobs[1], reference=blobs[0]))


def test_cli_compress_refine(tmp_path, capsys):
    src = tmp_path / "crop.tif"
    pixels = read_raster(stcm.SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels[:, :48, :48]
    write_raster(src, Raster(np.ascontiguousarray(pixels), None, None))
    packed, back = tmp_path / "crop.stcm", tmp_path / "back.tif"
    assert main(["compress", str(src), str(packed), "--refine", "3"]) == 0
    assert main(["decompress", str(packed), str(back)]) == 0
    assert read_raster(back).pixels.shape == pixels.shape
    capsys.readouterr()
    assert main(["compress", str(src), str(tmp_path / "x.stcm"), "--refine", "-1"]) != 0
    assert "refine" in capsys.readouterr().err
