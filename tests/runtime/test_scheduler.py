"""The scheduler's plan: decided before a run as data, and what the run then does."""
import numpy as np
import pytest
import torch

from stcm.config import get_config
from stcm.contexts import context_variant
from stcm.models.codec import STCM
from stcm.runtime.ans import pinned_scale_table
from stcm.runtime.backends.torch_backend import TorchBackend
from stcm.runtime.scheduler import STEP_POSITIONS, Scheduler, edge_index


def _tiny(**overrides):
    torch.manual_seed(0)
    model = STCM(get_config("tiny", **overrides)).eval()
    with torch.no_grad():  # a temporal prediction that predicts something
        for p in model.entropy_parameters.prediction:
            p.conv.weight.normal_()
    model.freeze()
    cfg = model.cfg
    return model, TorchBackend(model), pinned_scale_table(cfg.scale_min, cfg.scale_max,
                                                          cfg.scale_levels)


@pytest.fixture(scope="module")
def tiny():
    return _tiny()


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
    assert scheduler.batch() == STEP_POSITIONS // 64 ** 2 == 8
    assert scheduler.batch(8) == 512 and scheduler.batch(1000) == 1
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


@pytest.mark.parametrize("temporal,positions,prediction",
                         [(False, 18, False), (True, 18, False), (True, 200, False),
                          (True, 18, True)])
def test_side_inputs_in_blocks_equal_the_whole_latents(tiny, monkeypatch, temporal,
                                                       positions, prediction):
    """An exact model's side input is computed a few tiles at a time (``SIDE_POSITIONS``:
    a rectangle of tiles, a part of a row or whole rows) on their box grown by the context
    margin, so memory does not grow with the latent; it must equal the whole latent's, tile
    for tile, also for tiles coded intra beside tiles with a reference (whose temporal
    prediction is then zero), and for a window plan's crop."""
    import stcm.runtime.scheduler as sched

    model, backend, table = _tiny(temporal_prediction=True) if prediction else tiny
    assert backend.exact
    scheduler = Scheduler(backend, model.cfg, table, tile_size=3, tile_batch=None)
    rng = np.random.default_rng(1)
    shape = (13, 17)  # partial edge tiles both ways
    m = model.cfg.M
    hyper = rng.standard_normal((1, 2 * m, *shape)).astype(np.float32)
    y_hat = np.rint(4 * rng.standard_normal((1, m, *shape))).astype(np.float32)
    reference = (np.rint(4 * rng.standard_normal((1, m, *shape))).astype(np.float32)
                 if temporal else None)
    plan = scheduler.plan(shape)
    intra = [bool(t % 3 == 0) for t in range(plan.grid.count)] if temporal else None
    monkeypatch.setattr(sched, "SIDE_POSITIONS", positions)
    blocks = scheduler.side_blocks(plan.grid, range(plan.grid.count))
    assert [t for b in blocks for t in b] == list(range(plan.grid.count))
    for b in blocks:  # rectangles of tiles, within the position budget
        r0, c0, h, w = plan.grid.cover(b)
        assert sum(plan.grid.box(t)[2] * plan.grid.box(t)[3] for t in b) == h * w
        assert len(b) * 9 <= max(positions, 9)
    if positions == 18:  # two tiles of 3^2 a block: parts of rows
        assert len(blocks) > plan.grid.shape[0]
    else:  # whole rows of 6 tiles, stacked 3 rows a block (22 tiles of 3^2 fit 200)
        assert [len(b) for b in blocks] == [18, 12]
    gain = rng.uniform(0.5, 2, (1, m, 1, 1)).astype(np.float32)

    def expected(k, grid, tiles, box, hyper, y_hat, reference, intra):
        """(side, prediction) of the whole crop, split into tiles, intra ones alone."""
        side, pred = (None if v is None else grid.split(v, tiles, box)
                      for v in scheduler._side(k, hyper, y_hat, reference, gain))
        if temporal:
            flags = np.asarray([intra[t] for t in tiles]).reshape(-1, 1, 1, 1)
            alone = grid.split(scheduler._side(k, hyper, y_hat, None, gain)[0], tiles, box)
            side = np.where(flags, alone, side)
            pred = None if pred is None else np.where(flags, 0, pred)
        assert (pred is not None) == prediction
        return side, pred

    def check(got, want):
        np.testing.assert_array_equal(got[0], want[0])
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            assert want[1].any()
            np.testing.assert_array_equal(got[1], want[1])

    with backend.entropy_threads():
        for k in range(len(model.cfg.groups)):
            tiles = range(plan.grid.count)
            whole = expected(k, plan.grid, tiles, (0, 0), hyper, y_hat, reference, intra)
            check(scheduler._side_tiles(k, plan, tiles, hyper, y_hat, reference, gain, intra,
                                        {}), whole)
            chunk = range(5, 12)  # a chunk that starts and ends inside tile rows
            check(scheduler._side_tiles(k, plan, chunk, hyper, y_hat, reference, gain, intra,
                                        {}), tuple(None if v is None else v[5:12] for v in whole))
        # A window plan: its arrays hold only the crop, whose edge pads as the crop's own
        # whole computation does.
        window = scheduler.window_plan(shape, (6, 7, 2, 3))
        r0, c0, h, w = window.crop
        cut = (slice(None), slice(None), slice(r0, r0 + h), slice(c0, c0 + w))
        ref_cut = reference[cut] if temporal else None
        for group in window.groups:
            k = group.group
            whole = expected(k, window.grid, group.tiles, (r0, c0), hyper[cut], y_hat[cut],
                             ref_cut, intra)
            check(scheduler._side_tiles(k, window, group.tiles, hyper[cut], y_hat[cut],
                                        ref_cut, gain, intra, {}), whole)


def test_the_hyper_prior_in_blocks_equals_the_whole(tiny, monkeypatch):
    """An exact model's h_s runs in blocks of ``HYPER_BLOCK`` positions with a margin of z
    cells, bit-identical to the whole computation; and a codec's streams and decoded
    latents do not change with the size of the side input's blocks."""
    import stcm.runtime.codec as codec_module
    import stcm.runtime.scheduler as sched
    from conftest import make_smooth_image
    from stcm.runtime.codec import Codec

    model, _, _ = tiny
    codec = Codec(model, tile_size=3)
    z_hat = np.rint(3 * np.random.default_rng(2).standard_normal((1, model.cfg.N, 11, 9))
                    ).astype(np.float32)
    with codec.backend.entropy_threads():
        whole = codec._hyper(z_hat)
        monkeypatch.setattr(codec_module, "HYPER_BLOCK", 8)  # 2 z cells a block
        np.testing.assert_array_equal(codec._hyper(z_hat), whole)
    monkeypatch.setattr(codec_module, "HYPER_BLOCK", 10 ** 6)
    image = np.rint(make_smooth_image(np.random.default_rng(3), 3, 200, 260) * 255
                    ).astype(np.uint8)
    coded, decoded = {}, {}
    for positions in (9, 10 ** 9):  # one tile of 3^2 a block; a tile row
        monkeypatch.setattr(sched, "SIDE_POSITIONS", positions)
        coded[positions] = codec.compress(image, 0.5)
        decoded[positions] = codec._decompress(coded[9], None)[1][0]
    assert coded[9] == coded[10 ** 9]
    np.testing.assert_array_equal(decoded[9], decoded[10 ** 9])


@pytest.mark.parametrize("prediction", [False, True])
def test_zero_reference_features_from_a_small_box_equal_the_whole_boxs(prediction):
    """Images and tiles coded alone read the temporal features of a zero reference; exact
    models compute them on at most 5 x 5 positions and repeat rows and columns: the same
    integers as the whole box, every shape (smaller than 5 too), and not a wasted call."""
    model, backend, table = _tiny(temporal_prediction=prediction)
    scheduler = Scheduler(backend, model.cfg, table)
    calls = []
    run = backend.run

    def spy(stage, *inputs):
        calls.append((stage, inputs[0].shape))
        return run(stage, *inputs)

    m = model.cfg.M
    gain = [np.ones((1, m, 1, 1), np.float32)] if prediction else []
    for shape in [(1, 1), (2, 7), (5, 5), (6, 9), (13, 3), (17, 40)]:
        hyper = np.zeros((1, 2 * m, *shape), np.float32)
        whole = backend.run("temporal_0", np.zeros((1, m, *shape), np.float32), *gain)[0]
        backend.run = spy
        try:
            got = scheduler._zero_temporal(0, hyper)
        finally:
            backend.run = run
        np.testing.assert_array_equal(got, whole)
        assert all(s[-2] <= 5 and s[-1] <= 5 for _, s in calls)
    # boxes of (1, 1), (2, 5), (5, 5) and (5, 3): (6, 9) and (17, 40) reuse (5, 5)
    assert [s[-2:] for _, s in calls] == [(1, 1), (2, 5), (5, 5), (5, 3)]
    assert list(edge_index(8, 2)) == [0, 1, 2, 2, 2, 2, 3, 4]
