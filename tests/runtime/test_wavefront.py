"""The step-by-step programs compute what the model's full-tensor forward computes.

The programs run on NumPy arrays (the runtime's CPU arrays); the model's forward on tensors.
"""
import numpy as np
import pytest
import torch

from stcm.models.codec import STCM
from stcm.config import CONTEXTS, get_config
from stcm.contexts import context_variant
from stcm.models.quant import ActQuant
from stcm.runtime.backends.torch_backend import TorchBackend
from stcm.runtime.steps import RecomputeProgram
from stcm.runtime.tiling import TileGrid
from stcm.runtime.wavefront import WavefrontProgram


def _network(context: str, **overrides):
    torch.manual_seed(0)
    model = STCM(get_config("tiny", context=context, **overrides)).eval()
    # Exact models: a different grid for every quantizer (a fresh model has one for all), so
    # the step's rescaling between grids is exercised in both directions.
    gen = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, ActQuant):
            module.exponent.copy_(torch.randint(-7, 0, module.exponent.shape, generator=gen))
    return model, TorchBackend(model)


def _inputs(cfg, h, w, seed=1):
    gen = torch.Generator().manual_seed(seed)
    y_hat = torch.round(3 * torch.randn(1, cfg.M, h, w, generator=gen))
    hyper = torch.randn(1, 2 * cfg.M, h, w, generator=gen)
    ref = torch.randn(1, cfg.M, h, w, generator=gen)
    return y_hat, hyper, ref


def _make(backend, cfg, naive, predictions=None):
    """Program factory; ``predictions``: per group, the temporal prediction split into tiles."""
    def make(k, side, valid):
        prediction = None if predictions is None else predictions[k]
        if cfg.context == "diag" and not naive:
            extra = backend.signatures[f"step_{k}"].extra
            return WavefrontProgram(backend, k, cfg.groups[k], side, valid, extra["radius"],
                                    [tuple(c) for c in extra["caches"]], prediction)
        return RecomputeProgram(backend, k, context_variant(cfg.context), cfg.groups[k], side,
                                valid, prediction)
    return make


def _run_program(make, model, k, y_hat, hyper, ref, grid):
    """Feeds the true y_hat step by step; returns the (mean, scale) maps the program produced."""
    ep = model.entropy_parameters
    sl = ep.group_slices()[k]
    with torch.no_grad():
        side = grid.split(ep.side(k, hyper, y_hat[:, : sl.start] if k else None, ref).numpy())
    valid = grid.valid()
    program = make(k, side, valid)
    truth = grid.split(y_hat[:, sl].numpy())
    mean_map, scale_map = np.zeros_like(truth), np.zeros_like(truth)
    for t in range(program.num_steps):
        rows, cols = program.positions[t]
        mean, scale = program.params(t)
        mean_map[:, :, rows, cols] = mean
        scale_map[:, :, rows, cols] = scale
        program.update(t, truth[:, :, rows, cols])
    assert np.array_equal(program.latent(), truth * valid), "the program's latent is what it was fed"
    return (torch.from_numpy(grid.merge(mean_map)), torch.from_numpy(grid.merge(scale_map)),
            program.num_steps)


def _assert_same(actual, expected, exact):
    """Exact models: the very bits (their integer sums do not depend on the computation's
    shape or fusion, and the step's folded scales are powers of two). Float: to rounding."""
    if exact:
        assert torch.equal(actual, expected)
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("exact", [True, False])
def test_step_programs_equal_the_full_tensor_forward(context, naive, exact):
    model, backend = _network(context, exact=exact)
    cfg = model.cfg
    h, w = 7, 10
    y_hat, hyper, ref = _inputs(cfg, h, w)
    with torch.no_grad():
        means, scales = model.entropy_parameters(y_hat, hyper, ref)
    grid = TileGrid(h, w, 64)  # one tile covering the latent
    for k, sl in enumerate(model.entropy_parameters.group_slices()):
        mean, scale, steps = _run_program(_make(backend, cfg, naive), model, k, y_hat, hyper,
                                          ref, grid)
        _assert_same(mean, means[:, sl], exact)
        _assert_same(scale, scales[:, sl], exact)
        expected = {"diag": h + w - 1, "checkerboard": 2, "serial": h * w, "none": 1}
        assert steps == expected[context]


@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("exact", [True, False])
def test_step_programs_add_the_temporal_prediction_as_the_forward_does(context, naive, exact):
    model, backend = _network(context, exact=exact, temporal_prediction=True)
    cfg = model.cfg
    ep = model.entropy_parameters
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in ep.prediction:
            p.conv.weight.copy_(torch.randn(p.conv.weight.shape, generator=gen))
    h, w = 7, 10
    y_hat, hyper, ref = _inputs(cfg, h, w)
    gain = torch.rand(1, cfg.M, 1, 1, generator=gen) + 0.5
    grid = TileGrid(h, w, 64)  # one tile covering the latent
    with torch.no_grad():
        means, scales = ep(y_hat, hyper, ref, gain)
        plain, _ = ep(y_hat, hyper, ref, torch.zeros_like(gain))  # prediction 0
        predictions = [grid.split(ep.predict(k, ref, gain).numpy())
                       for k in range(len(cfg.groups))]
    assert not torch.equal(means, plain)
    make = _make(backend, cfg, naive, predictions)
    for k, sl in enumerate(ep.group_slices()):
        mean, scale, _ = _run_program(make, model, k, y_hat, hyper, ref, grid)
        _assert_same(mean, means[:, sl], exact)
        _assert_same(scale, scales[:, sl], exact)


@pytest.mark.parametrize("layers,residual", [(1, True), (2, False), (3, True), (3, False)])
@pytest.mark.parametrize("exact", [True, False])
def test_wavefront_matches_the_naive_decoder_on_padded_edge_tiles(layers, residual, exact):
    model, backend = _network("diag", context_layers=layers, context_residual=residual,
                              exact=exact)
    cfg = model.cfg
    h, w = 11, 9
    y_hat, hyper, ref = _inputs(cfg, h, w, seed=2)
    grid = TileGrid(h, w, 4)  # 3 x 3 tiles of 4 x 4, edge tiles padded
    for k in range(len(cfg.groups)):
        naive = _run_program(_make(backend, cfg, True), model, k, y_hat, hyper, ref, grid)
        fast = _run_program(_make(backend, cfg, False), model, k, y_hat, hyper, ref, grid)
        _assert_same(fast[0], naive[0], exact)
        _assert_same(fast[1], naive[1], exact)


def test_a_padded_edge_tile_equals_the_smaller_tile_computed_alone():
    model, backend = _network("diag")
    cfg = model.cfg
    y_hat, hyper, ref = _inputs(cfg, 10, 5, seed=3)
    ep = model.entropy_parameters
    k, sl = 1, ep.group_slices()[1]
    with torch.no_grad():
        side = ep.side(k, hyper, y_hat[:, : sl.start], ref).numpy()
    results = []
    for frame_rows in (4, 6):  # the last 4 rows alone, or padded to a 6-row frame
        side_t = np.zeros((1, side.shape[1], frame_rows, 5), np.float32)
        side_t[:, :, :4] = side[:, :, 6:]
        valid = np.zeros((1, 1, frame_rows, 5), np.float32)
        valid[:, :, :4] = 1
        truth = np.zeros((1, cfg.groups[k], frame_rows, 5), np.float32)
        truth[:, :, :4] = y_hat[:, sl, 6:].numpy()
        program = _make(backend, cfg, False)(k, side_t, valid)
        means = np.zeros_like(truth)
        for t in range(program.num_steps):
            rows, cols = program.positions[t]
            means[:, :, rows, cols] = program.params(t)[0]
            program.update(t, truth[:, :, rows, cols])
        results.append(means[:, :, :4])
    assert np.array_equal(results[0], results[1])


@pytest.mark.parametrize("exact", [True, False])
def test_steps_on_the_rows_around_the_anti_diagonal_equal_steps_on_whole_columns(exact):
    model, backend = _network("diag", context_layers=3, context_residual=True, exact=exact)
    cfg = model.cfg
    h, w = 12, 12
    y_hat, hyper, ref = _inputs(cfg, h, w, seed=5)
    grid = TileGrid(h, w, 64)
    rows_seen = []
    run = backend.run

    def recording(stage, *inputs):
        if stage.startswith("step_"):
            rows_seen.append(inputs[0].shape[-1])
        return run(stage, *inputs)

    backend.run = recording
    results = {}
    for sliced in (True, False):
        backend.sliced_steps = sliced
        rows_seen.clear()
        results[sliced] = [_run_program(_make(backend, cfg, False), model, k, y_hat, hyper,
                                        ref, grid) for k in range(len(cfg.groups))]
        if sliced and exact:  # each step reads its positions' rows and 2 either side
            steps = h + w - 1
            expected = [min(h, min(t, h - 1) + 3) - max(0, max(0, t - w + 1) - 2)
                        for t in range(steps)]
            assert rows_seen == expected * len(cfg.groups)
        else:  # float models keep whole columns: their sums may round with the shape
            assert set(rows_seen) == {h}
    for fast, whole in zip(results[True], results[False]):
        _assert_same(fast[0], whole[0], exact)
        _assert_same(fast[1], whole[1], exact)
