"""Blocked transforms equal the whole-image transforms away from nothing: no visible seams."""
import numpy as np
import torch

from stcm.models.codec import STCM
from stcm.config import get_config
from stcm.runtime.blocks import run_blocked


def _numpy(module):
    """A torch module as the runtime sees a stage: NumPy in, NumPy out."""
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return run


def test_blocked_identity_reassembles_exactly():
    x = np.arange(1 * 2 * 200 * 130, dtype=np.float32).reshape(1, 2, 200, 130)
    np.testing.assert_array_equal(run_blocked(lambda t: t, x, block=64, halo=16), x)


def test_blocked_synthesis_matches_the_whole_image():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    latent = torch.randn(1, model.cfg.M, 24, 20).numpy()
    whole = _numpy(model.g_s)(latent)
    blocked = run_blocked(_numpy(model.g_s), latent, block=8, halo=6, up=16)
    assert blocked.shape == whole.shape
    assert np.abs(blocked - whole).max() < 1e-3 * np.abs(whole).max()


def test_blocked_analysis_matches_the_whole_image():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    x = torch.rand(1, 3, 384, 320).numpy()
    whole = _numpy(model.g_a)(x)
    blocked = run_blocked(_numpy(model.g_a), x, block=128, halo=96, down=16)
    assert blocked.shape == whole.shape
    assert np.abs(blocked - whole).max() < 1e-2 * np.abs(whole).max()
