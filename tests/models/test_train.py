"""Training: a few steps lower the loss; an interrupted run resumes to the very same weights."""
import os
import signal

import numpy as np
import pytest
import torch

from stcm.errors import ConfigError, DataError
from stcm.models.checkpoint import load_checkpoint
from stcm.models.config import get_config
from stcm.models.train import TrainConfig, Trainer, rd_loss


def _cfg(folder, out, **kw):
    base = dict(data=str(folder), out=str(out), steps=6, batch_size=2, crop=64, lr=1e-3,
                val_every=1000, ckpt_every=3, val_crops=2, threads=1)
    base.update(kw)
    return TrainConfig(**base)


@torch.no_grad()
def _eval_loss(trainer: Trainer) -> float:
    trainer.model.eval()
    losses = [float(rd_loss(trainer.model, trainer.val, torch.full((len(trainer.val),), q))[0])
              for q in (0.0, 0.5, 1.0)]
    return float(np.mean(losses))


def test_a_few_training_steps_lower_the_loss(image_folder, tmp_path):
    trainer = Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run", steps=40,
                                               batch_size=4), progress=False)
    before = _eval_loss(trainer)
    trainer.run()
    after = _eval_loss(trainer)
    assert after < 0.8 * before, (before, after)
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["step"] == 40 and set(meta["validation"]) == {"q0", "q0.5", "q1"}


def test_interrupted_training_resumes_to_identical_weights(image_folder, tmp_path):
    cfg = get_config("tiny")
    straight = Trainer(cfg, _cfg(image_folder, tmp_path / "a"), progress=False)
    straight.run()

    first = Trainer(cfg, _cfg(image_folder, tmp_path / "b"), progress=False)
    for _ in range(3):
        first.train_step()
    first.save()
    del first  # the session ends here
    resumed = Trainer(cfg, _cfg(image_folder, tmp_path / "b"), progress=False)
    assert resumed.step == 3
    resumed.run()
    for (name, a), (_, b) in zip(straight.model.state_dict().items(),
                                 resumed.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_sigterm_saves_the_run_like_ctrl_c(image_folder, tmp_path):
    trainer = Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run"), progress=False)
    step = trainer.train_step

    def step_then_terminate():
        stats = step()
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return stats

    trainer.train_step = step_then_terminate
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert signal.getsignal(signal.SIGTERM) is before
    assert Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run"), progress=False).step == 3


def test_resuming_with_another_model_config_is_refused(image_folder, tmp_path):
    Trainer(get_config("tiny"), _cfg(image_folder, tmp_path, steps=1), progress=False).run()
    with pytest.raises(ConfigError, match="another model config"):
        Trainer(get_config("tiny", context="checkerboard"), _cfg(image_folder, tmp_path, steps=2),
                progress=False)


def test_training_on_a_folder_without_images_fails_clearly(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError):
        Trainer(get_config("tiny"), _cfg(tmp_path, tmp_path / "out"), progress=False)


@pytest.mark.parametrize("share", [-0.5, 1.0])
def test_photo_share_outside_zero_to_one_is_refused(image_folder, tmp_path, share):
    with pytest.raises(ConfigError, match="photo_share"):
        _cfg(image_folder, tmp_path / "run", photo_share=share)


def test_photo_share_reaches_the_sampler_and_the_checkpoint(image_folder, tmp_path):
    trainer = Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run", steps=1,
                                               photo_share=0.35), progress=False)
    assert trainer.sampler is not None and trainer.cfg.photo_share == 0.35
    trainer.run()
    _, meta = load_checkpoint(tmp_path / "run")
    assert meta["train"]["photo_share"] == 0.35
