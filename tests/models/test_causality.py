"""Causality of every spatial context variant: a group's predicted parameters at (i, j) never
depend on a latent value that the decoder has not decoded when it reaches (i, j)."""
import numpy as np
import pytest
import torch

from stcm.config import CONTEXTS, get_config
from stcm.models.entropy_parameters import EntropyParameters
from stcm.contexts import diag_mask, num_decode_steps


def _decoded_before(context: str, h: int, w: int, i: int, j: int) -> np.ndarray:
    """(h, w) bool: the positions decoded before (i, j), from each variant's definition in
    the paper and DESIGN.md, independently of ``stcm.contexts``' step indexes."""
    a, b = np.mgrid[0:h, 0:w]
    if context == "diag":  # anti-diagonal by anti-diagonal
        return a + b < i + j
    if context == "checkerboard":  # anchors ((i + j) even) first, then the rest at once
        return ((a + b) % 2 == 0) & ((i + j) % 2 == 1)
    if context == "serial":  # raster order
        return (a < i) | ((a == i) & (b < j))
    if context == "none":
        return np.zeros((h, w), bool)
    raise AssertionError(f"no definition for {context}")


def _check_causal(ep, context: str, h: int, w: int, seed: int, uses: bool = True) -> None:
    """No group's parameters read a later group or a position not yet decoded; with
    ``uses``, every group after the first also reads the earlier ones (a fresh model: a
    trained one's clamps may saturate on random inputs, which hides a real dependency)."""
    cfg = ep.cfg
    gen = torch.Generator().manual_seed(seed)
    y = 3 * torch.randn(1, cfg.M, h, w, generator=gen)
    hyper = torch.randn(1, 2 * cfg.M, h, w, generator=gen)
    ref = torch.randn(1, cfg.M, h, w, generator=gen) if cfg.temporal else None
    for k, sl in enumerate(ep.group_slices()):
        for i in range(h):
            for j in range(w):
                dep = _dependencies(ep, y, hyper, ref, k, i, j)
                assert not dep[sl.stop:].any(), f"group {k} at {(i, j)} reads a later group"
                allowed = torch.from_numpy(_decoded_before(context, h, w, i, j))
                assert not dep[sl][:, ~allowed].any(), (
                    f"{context}: group {k} at {(i, j)} reads y_hat decoded at or after its step")
                if k > 0 and uses:
                    assert dep[: sl.start].any(), "channel context must read earlier groups"


def _dependencies(ep: EntropyParameters, y: torch.Tensor, hyper, ref, k: int, i: int, j: int):
    """Boolean (M, h, w): which y entries the parameters of group k at (i, j) depend on."""
    y = y.detach().requires_grad_(True)
    gain = None if ref is None else torch.ones(1, ep.cfg.M, 1, 1)  # for a temporal prediction
    means, scales = ep(y, hyper, ref, gain)
    sl = ep.group_slices()[k]
    out = means[0, sl, i, j].sum() + scales[0, sl, i, j].sum()
    (grad,) = torch.autograd.grad(out, y)
    return grad[0].abs() > 0


def _model(context: str, **overrides) -> tuple[EntropyParameters, torch.Tensor, torch.Tensor,
                                                torch.Tensor]:
    torch.manual_seed(0)
    cfg = get_config("tiny", context=context, **overrides)
    ep = EntropyParameters(cfg)
    # Non-zero biases everywhere so that no ReLU path is dead by construction.
    with torch.no_grad():
        for p in ep.parameters():
            if p.dim() == 1:
                p.uniform_(0.05, 0.2)
    return ep, cfg


@pytest.mark.parametrize("context", CONTEXTS)
def test_parameters_depend_only_on_earlier_decode_steps(context):
    ep, cfg = _model(context)
    _check_causal(ep, context, 6, 7, seed=1)


def test_the_trained_built_in_model_is_causal():
    """Masks must hold in trained weights too, not only at construction."""
    from stcm.models.checkpoint import load_checkpoint
    from stcm.runtime.codec import default_model_path

    model, _ = load_checkpoint(default_model_path())
    _check_causal(model.entropy_parameters, model.cfg.context, 4, 5, seed=5, uses=False)


@pytest.mark.parametrize("context", ["diag", "checkerboard", "serial"])
def test_context_actually_uses_decoded_neighbours(context):
    ep, cfg = _model(context)
    gen = torch.Generator().manual_seed(2)
    y = 3 * torch.randn(1, cfg.M, 8, 8, generator=gen)
    hyper = torch.randn(1, 2 * cfg.M, 8, 8, generator=gen)
    # (3, 4) is a non-anchor for checkerboard and has decoded neighbours in every order.
    dep = _dependencies(ep, y, hyper, None, 0, 3, 4)[ep.group_slices()[0]].any(0)
    assert dep.sum() > 0


def test_diag_context_reads_the_lower_left_neighbour_on_an_earlier_antidiagonal():
    # (i + 1, j - 2) lies on anti-diagonal i + j - 1: decoded by the wavefront, but after (i, j)
    # in raster order. This is what the diagonal pattern gains over the serial one.
    ep, cfg = _model("diag", context_layers=1)
    gen = torch.Generator().manual_seed(3)
    y = 3 * torch.randn(1, cfg.M, 8, 8, generator=gen)
    hyper = torch.randn(1, 2 * cfg.M, 8, 8, generator=gen)
    dep = _dependencies(ep, y, hyper, None, 0, 3, 4)[ep.group_slices()[0]].any(0)
    assert dep[4, 2]
    ep_serial, _ = _model("serial")
    dep_serial = _dependencies(ep_serial, y, hyper, None, 0, 3, 4)[ep.group_slices()[0]].any(0)
    assert not dep_serial[4, 2]


def _receptive_field(layers: int, context: str = "diag") -> np.ndarray:
    ep, cfg = _model(context, context_layers=layers)
    gen = torch.Generator().manual_seed(4)
    y = 3 * torch.randn(1, cfg.M, 24, 24, generator=gen)
    hyper = torch.randn(1, 2 * cfg.M, 24, 24, generator=gen)
    return _dependencies(ep, y, hyper, None, 0, 12, 13)[ep.group_slices()[0]].any(0).numpy()


def test_three_stacked_diag_layers_see_strictly_more_than_one():
    one, three = _receptive_field(1), _receptive_field(3)
    assert one.sum() == int(diag_mask(5, strict=True).sum())  # the 10 strict taps
    assert (three | one).sum() == three.sum(), "the stack must see everything one layer sees"
    assert three.sum() > one.sum()
    # Still causal: everything seen lies on earlier anti-diagonals.
    i, j = np.nonzero(three)
    assert ((i + j) < 12 + 13).all()


def test_decode_step_counts_match_the_paper():
    assert num_decode_steps("diag", 16, 24) == 16 + 24 - 1
    assert num_decode_steps("checkerboard", 16, 24) == 2
    assert num_decode_steps("serial", 16, 24) == 16 * 24
    assert num_decode_steps("none", 16, 24) == 1
