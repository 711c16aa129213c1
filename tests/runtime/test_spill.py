"""A spilled hyper prior (``runtime.spill``): the same values, so the same streams and pixels,
as holding it in memory."""
import numpy as np
import pytest
import torch

import stcm.runtime.codec as codec_module
from conftest import make_smooth_image
from stcm.config import get_config
from stcm.errors import ResourceLimitError
from stcm.models.codec import STCM
from stcm.runtime.blocks import run_blocked
from stcm.runtime.codec import Codec
from stcm.runtime.spill import SpilledLatent


def test_a_spilled_latent_reads_back_every_box_it_was_written():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 6, 37, 29)).astype(np.float32)
    with SpilledLatent(6, 37, 29) as spilled:
        assert run_blocked(lambda t: t, x, 8, 0, write=spilled.write) is None
        for _ in range(20):
            r0, c0 = rng.integers(0, 37), rng.integers(0, 29)
            r1, c1 = rng.integers(r0, 38), rng.integers(c0, 30)
            box = (slice(None), slice(None), slice(r0, r1), slice(c0, c1))
            np.testing.assert_array_equal(spilled[box], x[box])
        np.testing.assert_array_equal(spilled[:, 2:5, 3:9, :], x[:, 2:5, 3:9, :])
        with pytest.raises(TypeError):
            spilled[0]
        with pytest.raises(TypeError):
            spilled[:, :, ::2, :]
        with pytest.raises(ValueError):
            spilled.write(0, 2, 0, 2, x[:, :, :3, :2])


def test_a_folder_it_cannot_write_is_a_clear_error(tmp_path):
    with pytest.raises(ResourceLimitError, match="TMPDIR"):
        SpilledLatent(2, 3, 4, directory=tmp_path / "missing")


def test_spilling_the_hyper_prior_changes_no_stream_and_no_pixel(monkeypatch):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    codec = Codec(STCM(get_config("tiny")).eval(), tile_size=3)
    image = np.rint(make_smooth_image(np.random.default_rng(3), 4, 150, 170) * 255
                    ).astype(np.uint8)
    kept = codec.compress(image, 0.5)
    pixels = codec.decompress(kept)
    monkeypatch.setattr(codec_module, "SPILL_BYTES", 0)
    made = []
    original = SpilledLatent.__init__

    def counting(self, *args, **kwargs):
        made.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SpilledLatent, "__init__", counting)
    assert codec.compress(image, 0.5) == kept
    np.testing.assert_array_equal(codec.decompress(kept), pixels)
    assert len(made) == 4  # two band groups, encode and decode
