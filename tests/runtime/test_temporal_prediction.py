"""The temporal prediction (``ModelConfig.temporal_prediction``) through the runtime: the
temporal stage computes it, the step programs add it to the means, every backend codes the
same bits, the eager model predicts the means the engine coded with, and tiles coded alone
ignore it."""
import numpy as np
import pytest
import torch

from stcm.export.onnx import export_engine
from stcm.models.checkpoint import load_checkpoint, save_checkpoint
from stcm.models.codec import pad_image
from stcm.models.temporal_units import grow_temporal
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container
from stcm.runtime.scheduler import code_z

QUALITY = 0.7


def _payload(data: bytes) -> bytes:
    c = read_container(data)
    return c.data[c.payload_start:]


@pytest.fixture(scope="module")
def setup(trained_tiny, tmp_path_factory):
    """(checkpoint with a non-trivial prediction, its engine, reference pixels, current ones)."""
    model, _ = load_checkpoint(trained_tiny)
    grown = grow_temporal(model, prediction=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in grown.entropy_parameters.prediction:
            w = p.conv.weight
            w.copy_(0.05 * torch.randn(w.shape, generator=gen))
            w[:, :, 1, 1] += 0.8  # mostly a copy of the reference, as trained ones learn
            p.conv.act.exponent.fill_(-2)  # its input grid: steps of 1/4 up to +-128
    folder = tmp_path_factory.mktemp("prediction")
    path = save_checkpoint(grown, folder / "model.safetensors")
    engine = folder / "engine"
    export_engine(path, engine, progress=False)
    rng = np.random.default_rng(5)
    base = np.cumsum(np.cumsum(rng.normal(size=(3, 160, 192)), 1), 2)
    base = (base - base.min()) / np.ptp(base)
    reference = np.rint(base * 255).astype(np.uint8)
    current = np.clip(np.rint(base * 240 + 8 + rng.normal(0, 2, base.shape)), 0, 255)
    return path, engine, reference, current.astype(np.uint8)


def test_backends_code_the_same_bits_with_a_reference(setup):
    path, engine, reference, current = setup
    torch_codec, ort = Codec(path, tile_size=4), Codec(engine=engine, tile_size=4)
    ref_bytes = torch_codec.compress(reference, QUALITY)
    assert ort.compress(reference, QUALITY) == ref_bytes
    data = torch_codec.compress(current, QUALITY, reference=ref_bytes, temporal="on")
    assert ort.compress(current, QUALITY, reference=ref_bytes, temporal="on") == data
    latents = [codec._decompress(data, codec._decoded_reference(ref_bytes, data, None),
                                 ref_bytes)[1]
               for codec in (torch_codec, ort, Codec(path, tile_size=4, tile_batch=3))]
    for other in latents[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(other, latents[0]))


def test_the_eager_model_predicts_the_means_the_engine_coded_with(setup):
    """One tile over the whole latent: y_hat - mean is an integer everywhere only if the
    eager model's means (prediction included) are the engine's, to the last bit."""
    path, engine, reference, current = setup
    ort = Codec(engine=engine, tile_size=64)
    eager = Codec(path)
    model = eager.model
    gain = eager.tables.gains(QUALITY)[0]
    ref_latent = ort._decompress(ort.compress(reference, QUALITY), None)[1][0]
    with torch.no_grad():
        x = torch.from_numpy(current[None].astype(np.float32) / 255)
        y = model.g_a(pad_image(x)) * torch.from_numpy(gain)
        z_hat, _, _ = code_z(eager.z_coder, model.h_a(y).numpy(), eager.medians)
        hyper = ort.backend.run("hyper_synthesis", z_hat)[0]
        y_hat = ort.scheduler.encode(y.numpy(), hyper, ref_latent, gain=gain).y_hat
        means, _ = model.entropy_parameters(torch.from_numpy(y_hat), torch.from_numpy(hyper),
                                            torch.from_numpy(ref_latent), torch.from_numpy(gain))
        no_prediction, _ = model.entropy_parameters(  # a zero gain: the prediction is 0
            torch.from_numpy(y_hat), torch.from_numpy(hyper), torch.from_numpy(ref_latent),
            torch.zeros(gain.shape))
    residual = torch.from_numpy(y_hat) - means
    assert torch.equal(residual, torch.round(residual))
    assert not torch.equal(means, no_prediction)


def test_images_and_tiles_coded_alone_do_not_see_the_prediction(setup, trained_tiny):
    path, engine, reference, current = setup
    with_pred, without = Codec(path, tile_size=4), Codec(trained_tiny, tile_size=4)
    alone = with_pred.compress(current, QUALITY)
    assert _payload(alone) == _payload(without.compress(current, QUALITY))
    # auto mode: tiles that pick intra code as the model without prediction codes them alone
    ref_bytes = with_pred.compress(reference, QUALITY)
    auto = with_pred.compress(current, QUALITY, reference=ref_bytes, temporal="auto")
    on = with_pred.compress(current, QUALITY, reference=ref_bytes, temporal="on")
    assert len(auto) <= min(len(on), len(alone))
    tiles = len(read_container(auto).header.intra_tiles)
    assert 0 < tiles < 3 * 3, "a mix of tiles (3 x 3 of 4 latent positions) with and without"
    # (latents: the float synthesis may differ by a level across backends)
    latents = [c._decompress(auto, c._decoded_reference(ref_bytes, auto, None), ref_bytes)[1]
               for c in (with_pred, Codec(engine=engine, tile_size=4))]
    assert all(np.array_equal(a, b) for a, b in zip(*latents))


def test_scheduler_refuses_a_reference_without_the_gain(setup):
    path, _, _, _ = setup
    codec = Codec(path)
    m = codec.cfg.M
    y = np.zeros((1, m, 4, 4), np.float32)
    hyper = np.zeros((1, 2 * m, 4, 4), np.float32)
    with pytest.raises(ValueError, match="encoder gain"):
        codec.scheduler.encode(y, hyper, np.zeros_like(y))


def test_windows_decode_what_the_whole_decode_does(setup):
    # The prediction reads the reference within 1 position: inside the window plan's margin.
    path, _, reference, current = setup
    codec = Codec(path, tile_size=4)
    ref_bytes = codec.compress(reference, QUALITY)
    data = codec.compress(current, QUALITY, reference=ref_bytes, temporal="on")
    full = codec.decompress(data, reference=ref_bytes)
    for col, row, width, height in [(0, 0, 33, 17), (100, 60, 50, 40), (191, 159, 1, 1)]:
        got = codec.decompress(data, reference=ref_bytes, window=(col, row, width, height))
        assert np.array_equal(got, full[:, row:row + height, col:col + width])
