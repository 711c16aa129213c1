"""The lr and crop schedules: endpoints, the warm-up after a fresh optimizer, the batch that
keeps the pixels per step."""
import math

import pytest

from stcm.models.schedule import crop_and_batch, learning_rate


def test_step_schedule_drops_tenfold_at_its_fraction():
    assert learning_rate(1e-3, 79, 100, schedule="step") == 1e-3
    assert learning_rate(1e-3, 80, 100, schedule="step") == pytest.approx(1e-4)


def test_cosine_runs_from_the_base_to_the_floor_and_stays_there():
    lrs = [learning_rate(1.0, s, 100, schedule="cosine", floor=0.1) for s in range(0, 121)]
    assert lrs[0] == 1.0 and lrs[100] == pytest.approx(0.1) and lrs[120] == pytest.approx(0.1)
    assert lrs[50] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_ramps_only_after_the_fresh_start():
    kw = dict(schedule="cosine", floor=0.0, warmup=10)
    # A run resumed from weights alone at step 500 warms up again from there ...
    ramp = [learning_rate(1.0, s, 1000, warm_from=500, **kw) for s in range(500, 512)]
    plain = [learning_rate(1.0, s, 1000, schedule="cosine", floor=0.0) for s in range(500, 512)]
    assert ramp[0] == pytest.approx(plain[0] / 10) and ramp[9] == pytest.approx(plain[9])
    assert ramp[10:] == plain[10:]
    assert all(a < b for a, b in zip(ramp[:10], ramp[1:10]))
    # ... and steps before the fresh start are not touched.
    assert learning_rate(1.0, 400, 1000, warm_from=500, **kw) == \
        learning_rate(1.0, 400, 1000, schedule="cosine", floor=0.0)


def test_unknown_schedule_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown lr schedule"):
        learning_rate(1.0, 0, 10, schedule="linear")


def test_final_crop_keeps_the_pixels_per_step():
    assert crop_and_batch(74, 100, 128, 8, 256, 0.75) == (128, 8)
    assert crop_and_batch(75, 100, 128, 8, 256, 0.75) == (256, 2)
    crop, batch = crop_and_batch(99, 100, 128, 8, 192, 0.75)
    assert crop == 192 and math.isclose(batch * crop ** 2, 8 * 128 ** 2, rel_tol=0.3)
    assert crop_and_batch(99, 100, 64, 1, 256, 0.5) == (256, 1)  # never an empty batch
    assert crop_and_batch(99, 100, 128, 8) == (128, 8)
