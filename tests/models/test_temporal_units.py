"""Retraining the temporal branch alone: images coded without a reference keep their exact
streams, only the added units (and the temporal prediction) move, and the run records what it
kept."""
import numpy as np
import pytest
import torch

from stcm.config import get_config
from stcm.errors import ConfigError
from stcm.models.checkpoint import load_checkpoint
from stcm.models.codec import STCM
from stcm.models.temporal_units import (TemporalUnits, grow_temporal, intra_unchanged,
                                        kept_units)
from stcm.models.train import TrainConfig, Trainer
from stcm.runtime.codec import Codec
from stcm.runtime.container import read_container


def _streams(data: bytes) -> bytes:
    # Everything after the header's model id: the files of two models differ there only.
    c = read_container(data)
    return c.data[c.payload_start:]


@pytest.fixture(scope="module")
def tiny_wide(trained_tiny, image_folder, tmp_path_factory):
    """(source checkpoint, its temporal units retrained for a few steps with 8 more units)."""
    source, _ = load_checkpoint(trained_tiny)
    out = tmp_path_factory.mktemp("units")
    width = source.cfg.temporal_width + 8
    cfg = TrainConfig(data=str(image_folder), out=str(out), steps=12, batch_size=2, crop=64,
                      lr=3e-3, val_every=6, ckpt_every=6, val_crops=2, threads=1,
                      init=str(trained_tiny), temporal_keep=kept_units(trained_tiny))
    trainer = Trainer(source.cfg.replace(temporal_width=width), cfg, progress=False)
    validation = trainer.run()
    return trained_tiny, out / "checkpoint.safetensors", validation


@pytest.mark.parametrize("units,prediction", [(5, False), (0, True), (3, True)])
def test_growing_changes_no_prediction_with_or_without_reference(trained_tiny, units,
                                                                 prediction):
    model, _ = load_checkpoint(trained_tiny)
    grown = grow_temporal(model, model.cfg.temporal_width + units, prediction)
    assert grown.cfg.temporal_prediction == prediction
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 64, 64, generator=gen)
    with torch.no_grad():
        reference = model(torch.rand(2, 3, 64, 64, generator=gen), 0.5).latent
        for ref in (None, reference):
            a, b = model(x, 0.5, ref), grown(x, 0.5, ref)
            assert torch.equal(a.means, b.means) and torch.equal(a.scales, b.scales)
    assert intra_unchanged(model, grown)
    with pytest.raises(ConfigError, match="add nothing"):
        grow_temporal(grown, grown.cfg.temporal_width, prediction)


def test_only_the_added_units_train_and_images_alone_keep_their_streams(tiny_wide, image_folder):
    source_path, wide_path, validation = tiny_wide
    source, _ = load_checkpoint(source_path)
    wide, meta = load_checkpoint(wide_path)
    keep = source.cfg.temporal_width
    assert meta["train"]["temporal_keep"] == keep and kept_units(wide_path) == keep
    old, new = source.state_dict(), wide.state_dict()
    moved = []
    for name, value in new.items():
        if ".temporal." in name and name.endswith("net.0.weight"):
            assert torch.equal(value[:keep], old[name])
            moved.append(not torch.equal(value[keep:], torch.zeros_like(value[keep:])))
        elif ".temporal." in name and name.endswith("net.2.weight"):
            assert torch.equal(value[:, :keep], old[name])
            moved.append(bool(value[:, keep:].abs().sum() > 0))  # output weights start at 0
        elif ".temporal." in name and name.endswith("net.0.bias"):
            assert torch.equal(value[:keep], old[name]) and not value[keep:].any()
        else:
            assert torch.equal(value, old[name]), name
    assert all(moved)
    assert intra_unchanged(source, wide)
    assert "bpp_alone" in validation["q0"]

    image = np.asarray(__import__("PIL.Image").Image.open(image_folder / "rgb_b.png"))
    image = np.moveaxis(image, -1, 0)
    a, b = Codec(str(source_path), progress=False), Codec(str(wide_path), progress=False)
    for q in (0.0, 1.0):
        alone_a, alone_b = a.compress(image, q), b.compress(image, q)
        assert _streams(alone_a) == _streams(alone_b)
        # and with a reference the retrained units predict differently
        later = np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8)
        on_a = a.compress(later, q, reference=alone_a, temporal="on")
        on_b = b.compress(later, q, reference=alone_b, temporal="on")
        assert _streams(on_a) != _streams(on_b)
        assert np.array_equal(b.decompress(on_b, reference=alone_b),
                              b.decompress(on_b, reference=alone_b))


def test_nothing_to_train_is_a_clear_error(trained_tiny):
    model, _ = load_checkpoint(trained_tiny)
    with pytest.raises(ConfigError, match="leaves nothing to train"):
        TemporalUnits(model, model.cfg.temporal_width)
    with pytest.raises(ConfigError, match="cannot keep"):
        TemporalUnits(model, model.cfg.temporal_width + 1)
    with pytest.raises(ConfigError, match="at least one"):
        TemporalUnits(grow_temporal(model, model.cfg.temporal_width + 4), 0)
    with pytest.raises(ConfigError, match="no temporal branch"):
        TemporalUnits(STCM(get_config("tiny", temporal=False)), 1)


def test_cli_retrains_and_resumes_with_what_it_kept(trained_tiny, image_folder, tmp_path, capsys):
    from stcm.cli import main

    width = load_checkpoint(trained_tiny)[0].cfg.temporal_width
    args = ["train", "--data", str(image_folder), "--crop", "64", "--batch-size", "2",
            "--threads", "1", "--quiet", "--temporal-units", str(width + 4)]
    assert main(args + ["--init", str(trained_tiny), "--out", str(tmp_path / "a"),
                        "--steps", "2"]) == 0
    first = tmp_path / "a" / "checkpoint.safetensors"
    assert kept_units(first) == width
    # --resume of the widened checkpoint keeps the original units, not all of its own
    assert main(args + ["--resume", str(first), "--out", str(tmp_path / "b"),
                        "--steps", "4"]) == 0
    second, meta = load_checkpoint(tmp_path / "b")
    assert meta["step"] == 4 and meta["train"]["temporal_keep"] == width
    assert intra_unchanged(load_checkpoint(trained_tiny)[0], second)
    assert main(["train", "--data", str(image_folder), "--out", str(tmp_path / "c"),
                 "--temporal-units", "8", "--steps", "1"]) == 2
    assert "give --init or --resume" in capsys.readouterr().err


def test_new_weights_that_would_move_a_kept_grid_are_shrunk_back(trained_tiny):
    # Large new output weights raise a row's peak and accumulator bound, which set the row's
    # weight grid: after_step must bring every kept unit's coded weights back.
    model, _ = load_checkpoint(trained_tiny)
    keep = model.cfg.temporal_width
    wide = grow_temporal(model, keep + 64)
    units = TemporalUnits(wide, keep)
    with torch.no_grad():
        for branch in wide.entropy_parameters.temporal:
            out = branch.net[2].weight
            out[:, keep:] = 3 * out[:, :keep].abs().max()
    assert not intra_unchanged(model, wide)
    units.after_step()
    assert intra_unchanged(model, wide)
    assert all(bool(b.net[2].weight[:, keep:].abs().sum() > 0)
               for b in wide.entropy_parameters.temporal)


def _alone_and_on(codec: Codec, image: np.ndarray, q: float) -> tuple[bytes, bytes]:
    """(image coded alone, a brighter later image coded with it as reference)."""
    alone = codec.compress(image, q)
    later = np.clip(image.astype(int) + 3, 0, 255).astype(np.uint8)
    return alone, codec.compress(later, q, reference=alone, temporal="on")


def test_the_prediction_trains_alone_and_images_alone_keep_their_streams(
        trained_tiny, image_folder, tmp_path):
    source, _ = load_checkpoint(trained_tiny)
    keep = source.cfg.temporal_width  # no units added: only the prediction trains
    cfg = TrainConfig(data=str(image_folder), out=str(tmp_path), steps=8, batch_size=2, crop=64,
                      lr=3e-3, val_every=8, ckpt_every=8, val_crops=2, threads=1,
                      init=str(trained_tiny), temporal_keep=keep)
    Trainer(source.cfg.replace(temporal_prediction=True), cfg, progress=False).run()
    path = tmp_path / "checkpoint.safetensors"
    trained, _ = load_checkpoint(path)
    old, new = source.state_dict(), trained.state_dict()
    assert set(new) - set(old) == {k for k in new if ".prediction." in k}
    assert all(torch.equal(old[k], new[k]) for k in old), "only the prediction may move"
    assert all(p.conv.weight.abs().sum() > 0 for p in trained.entropy_parameters.prediction)
    assert intra_unchanged(source, trained)
    image = np.moveaxis(np.asarray(__import__("PIL.Image").Image.open(image_folder
                                                                       / "rgb_b.png")), -1, 0)
    a, b = Codec(str(trained_tiny), progress=False), Codec(str(path), progress=False)
    for q in (0.0, 1.0):
        (alone_a, on_a), (alone_b, on_b) = _alone_and_on(a, image, q), _alone_and_on(b, image, q)
        assert _streams(alone_a) == _streams(alone_b)
        assert _streams(on_a) != _streams(on_b)  # the trained prediction is used


def test_cli_adds_the_prediction_only_to_a_units_run(trained_tiny, image_folder, tmp_path,
                                                     capsys):
    from stcm.cli import main

    width = load_checkpoint(trained_tiny)[0].cfg.temporal_width
    args = ["train", "--data", str(image_folder), "--crop", "64", "--batch-size", "2",
            "--threads", "1", "--quiet", "--init", str(trained_tiny), "--steps", "2"]
    assert main(args + ["--temporal-units", str(width), "--temporal-prediction",
                        "--out", str(tmp_path / "a")]) == 0
    model, meta = load_checkpoint(tmp_path / "a")
    assert model.cfg.temporal_prediction and meta["train"]["temporal_keep"] == width
    assert main(args + ["--temporal-prediction", "--out", str(tmp_path / "b")]) == 2
    assert "--temporal-prediction goes with --temporal-units" in capsys.readouterr().err
