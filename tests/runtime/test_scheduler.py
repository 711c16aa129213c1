"""The scheduler's plan: decided before a run as data, and what the run then does."""
import numpy as np
import pytest
import torch

from stcm.config import get_config
from stcm.contexts import context_variant
from stcm.models.codec import STCM
from stcm.runtime.ans import pinned_scale_table
from stcm.runtime.backends.torch_backend import TorchBackend
from stcm.runtime.scheduler import STEP_POSITIONS, Scheduler


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = STCM(get_config("tiny")).eval()
    model.freeze()
    cfg = model.cfg
    return model, TorchBackend(model), pinned_scale_table(cfg.scale_min, cfg.scale_max,
                                                          cfg.scale_levels)


@pytest.mark.parametrize("tile_size,tile_batch", [(4, 1), (4, 3), (8, 16), (3, 2)])
def test_the_plan_covers_every_tile_once_per_step_of_every_group(tiny, tile_size, tile_batch):
    model, backend, table = tiny
    scheduler = Scheduler(backend, model.cfg, table, tile_size, tile_batch)
    plan = scheduler.plan((7, 10))
    th, tw = plan.grid.frame
    assert [g.group for g in plan.groups] == list(range(len(model.cfg.groups)))
    assert [g.channels.stop - g.channels.start for g in plan.groups] == list(model.cfg.groups)
    assert plan.groups[-1].channels.stop == model.cfg.M
    for group in plan.groups:
        tiles = [t for chunk in group.chunks for t in chunk]
        assert tiles == list(range(plan.grid.count))  # each tile once, in order
        assert all(len(c) <= tile_batch for c in group.chunks)
        assert group.steps == context_variant(model.cfg.context).num_steps(th, tw)
    assert plan.steps == len(model.cfg.groups) * (th + tw - 1)  # diag: anti-diagonals
    assert plan.calls == plan.steps * -(-plan.grid.count // tile_batch)
    # Another tile size is another plan; the scheduler itself is unchanged by asking.
    assert scheduler.plan((7, 10), tile_size=2).grid.frame == (2, 2)
    assert scheduler.tile_size == tile_size


def test_without_a_tile_batch_each_call_holds_a_fixed_count_of_positions(tiny):
    model, backend, table = tiny
    scheduler = Scheduler(backend, model.cfg, table, 64, None)
    assert scheduler.batch() == STEP_POSITIONS // 64 ** 2 == 16
    assert scheduler.batch(8) == 1024 and scheduler.batch(1000) == 1
    # 40 x 40 positions in tiles of 4: 100 tiles, all in one call per step.
    plan = scheduler.plan((40, 40), tile_size=4)
    assert plan.grid.count == 100 and all(len(g.chunks) == 1 for g in plan.groups)
    assert Scheduler(backend, model.cfg, table, 4, 7).plan((40, 40)).groups[0].chunks[1] == \
        range(7, 14)


def test_encode_and_decode_run_the_plan_and_report_each_step_call(tiny):
    model, backend, table = tiny
    scheduler = Scheduler(backend, model.cfg, table, tile_size=4, tile_batch=1)
    rng = np.random.default_rng(0)
    shape = (6, 5)
    y = (3 * rng.standard_normal((1, model.cfg.M, *shape))).astype(np.float32)
    hyper = rng.standard_normal((1, 2 * model.cfg.M, *shape)).astype(np.float32)
    steps = []
    with backend.entropy_threads():
        coded = scheduler.encode(y, hyper, None, on_step=lambda: steps.append("e"))
        y_hat, streams = coded.y_hat, coded.streams
        plan = scheduler.plan(shape)
        assert len(streams) == plan.grid.count
        decoded = scheduler.decode(streams, shape, hyper, None,
                                   on_step=lambda: steps.append("d"))
    assert steps == ["e"] * plan.calls + ["d"] * plan.calls  # one per step of each chunk
    np.testing.assert_array_equal(decoded, y_hat)
    with pytest.raises(ValueError, match="streams for"):
        scheduler.decode(streams[:-1], shape, hyper, None)
