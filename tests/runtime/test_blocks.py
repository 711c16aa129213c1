"""Blocked transforms equal the whole-image transforms away from nothing: no visible seams."""
import torch

from stcm.models.codec import STCM
from stcm.models.config import get_config
from stcm.runtime.blocks import run_blocked


def test_blocked_identity_reassembles_exactly():
    x = torch.arange(1 * 2 * 200 * 130, dtype=torch.float32).view(1, 2, 200, 130)
    assert torch.equal(run_blocked(lambda t: t, x, block=64, halo=16), x)


def test_blocked_synthesis_matches_the_whole_image():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    latent = torch.randn(1, model.cfg.M, 24, 20)
    with torch.no_grad():
        whole = model.g_s(latent)
        blocked = run_blocked(model.g_s, latent, block=8, halo=6, up=16)
    assert blocked.shape == whole.shape
    assert (blocked - whole).abs().max() < 1e-3 * whole.abs().max()


def test_blocked_analysis_matches_the_whole_image():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    x = torch.rand(1, 3, 384, 320)
    with torch.no_grad():
        whole = model.g_a(x)
        blocked = run_blocked(model.g_a, x, block=128, halo=96, down=16)
    assert blocked.shape == whole.shape
    assert (blocked - whole).abs().max() < 1e-2 * whole.abs().max()
