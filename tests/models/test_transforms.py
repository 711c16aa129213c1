"""The transforms' reach (``ModelConfig.transform_reach``), against their measured receptive
field: the runtime's block halos and window decode rely on it."""
import math

import numpy as np
import pytest
import torch

from stcm.config import PRESETS
from stcm.models.transforms import analysis, synthesis
from stcm.runtime.blocks import run_blocked

CELL = 16


def _changed(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Rows (of the last two axes) where a and b differ anywhere."""
    return torch.nonzero((a - b).abs().amax(dim=(0, 1, 3)) > 0).flatten().numpy()


def measured_reach(cfg) -> tuple[int, int]:
    """(g_a, g_s) receptive reach in pixels of a freshly built transform pair (random weights:
    every structural dependency shows), by a change at one pixel / one latent position."""
    torch.manual_seed(0)
    n = 2 * math.ceil(cfg.transform_reach / CELL) + 5  # latent positions, more than enough
    c = n // 2
    g_a, g_s = analysis(cfg).eval(), synthesis(cfg).eval()
    with torch.no_grad():
        x = torch.rand(1, cfg.in_channels, n * CELL, n * CELL)
        q = c * CELL + 7  # inside a cell, off its edges
        x2 = x.clone()
        x2[:, :, q, :] += 1.0  # a whole row: the rows axis is what is measured
        cells = _changed(g_a(x), g_a(x2))
        reach_a = int(max(max(CELL * p - q, q - (CELL * p + CELL - 1)) for p in cells))
        y = torch.randn(1, cfg.M, n, n)
        y2 = y.clone()
        y2[:, :, c, :] += 3.0
        rows = _changed(g_s(y), g_s(y2))
        reach_s = int(max(CELL * c - rows.min(), rows.max() - (CELL * c + CELL - 1)))
    return reach_a, reach_s


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_transform_reach_covers_the_measured_receptive_field_and_no_more_than_a_cell(name):
    cfg = PRESETS[name]
    reach_a, reach_s = measured_reach(cfg)
    assert max(reach_a, reach_s) <= cfg.transform_reach
    # The halo in latent positions is the smallest that covers what was measured.
    assert cfg.transform_halo == math.ceil(max(reach_a, reach_s) / CELL)


def test_blocks_with_the_reach_as_halo_give_the_whole_synthesis():
    cfg = PRESETS["small"]
    torch.manual_seed(1)
    g_s = synthesis(cfg).eval()
    y = np.random.default_rng(0).standard_normal((1, cfg.M, 21, 19)).astype(np.float32)

    def fn(t):
        with torch.no_grad():
            return g_s(torch.from_numpy(np.ascontiguousarray(t))).numpy()

    whole = fn(y)
    blocked = run_blocked(fn, y, 8, cfg.transform_halo, up=CELL)
    assert np.abs(blocked - whole).max() < 1e-4  # float summation order only
    short = run_blocked(fn, y, 8, cfg.transform_halo - 1, up=CELL)
    assert np.abs(short - whole).max() > 1e-3  # one position less shows at the seams
