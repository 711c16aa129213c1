"""Training: a few steps lower the loss; an interrupted run resumes to the very same weights."""
import os
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from stcm.errors import ConfigError, DataError
from stcm.models.checkpoint import load_checkpoint
from stcm.config import get_config
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


def test_resume_from_a_checkpoint_alone_continues_its_weights_and_step(image_folder, tmp_path):
    cfg = get_config("tiny")
    first = Trainer(cfg, _cfg(image_folder, tmp_path / "a", steps=3,
                              half_copy=str(tmp_path / "resume.safetensors")), progress=False)
    first.run()
    # What a fresh clone has: the fp16 copy, no optimizer state, another output folder.
    half, meta = load_checkpoint(tmp_path / "resume.safetensors")
    assert meta["step"] == 3
    stored = load_file(str(tmp_path / "resume.safetensors"))
    assert all(v.dtype == torch.float16 for k, v in stored.items() if k.startswith("g_a."))
    second = Trainer(cfg, _cfg(image_folder, tmp_path / "b", steps=5, warmup=4,
                               resume=str(tmp_path / "resume.safetensors")), progress=False)
    assert second.step == 3 and second.warm_from == 3 and not second.exact_resume
    for k, v in second.model.state_dict().items():
        assert torch.equal(v, half.state_dict()[k]), k
    second._set_lr()
    assert second.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)  # warming up
    second.run()
    _, meta = load_checkpoint(tmp_path / "b")
    assert meta["step"] == 5 and meta["resumed_from"]["step"] == 3
    assert meta["throughput"]["steps_per_s"] > 0 and meta["throughput"]["megapixels_per_s"] > 0
    # Rerunning the same command continues the run in --out exactly, not the file again.
    again = Trainer(cfg, _cfg(image_folder, tmp_path / "b", steps=6, warmup=4,
                              resume=str(tmp_path / "resume.safetensors")), progress=False)
    assert again.exact_resume and again.step == 5 and again.warm_from == 3


def test_resume_from_a_checkpoint_of_another_config_is_refused(image_folder, tmp_path):
    Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "a", steps=1), progress=False).run()
    with pytest.raises(ConfigError, match="another config"):
        Trainer(get_config("tiny", backbone="hl"), _cfg(
            image_folder, tmp_path / "b", resume=str(tmp_path / "a" / "checkpoint.safetensors")),
            progress=False)
    with pytest.raises(ConfigError, match="either init"):
        _cfg(image_folder, tmp_path / "c", init="x", resume="y")


def test_crop_schedule_switches_the_crop_and_shrinks_the_batch(image_folder, tmp_path):
    trainer = Trainer(get_config("tiny", temporal=False),
                      _cfg(image_folder, tmp_path / "run", steps=4, crop=32, batch_size=4,
                           final_crop=64, final_crop_at=0.5), progress=False)
    shapes = []
    batch = trainer._batch

    def record():
        x, ref = batch()
        shapes.append(tuple(x.shape[-3:]) + (x.shape[0],))
        return x, ref

    trainer._batch = record
    trainer.run()
    assert shapes == [(3, 32, 32, 4)] * 2 + [(3, 64, 64, 1)] * 2
    assert trainer.val.shape[-1] == 32  # validation stays comparable across the switch


def test_a_checkpoint_is_written_when_the_time_is_up(image_folder, tmp_path, monkeypatch):
    trainer = Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run", steps=3,
                                               ckpt_every=1000, ckpt_minutes=0), progress=False)
    saved = []
    save = trainer.save
    monkeypatch.setattr(trainer, "save", lambda *a: (saved.append(trainer.step), save(*a)))
    trainer.run()
    assert saved == [1, 2, 3]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_training_on_cuda_saves_a_checkpoint_that_loads_on_the_cpu(image_folder, tmp_path):
    cfg = get_config("tiny")
    trainer = Trainer(cfg, _cfg(image_folder, tmp_path / "run", steps=3, device="cuda"),
                      progress=False)
    assert next(trainer.model.parameters()).is_cuda
    trainer.run()
    model, meta = load_checkpoint(tmp_path / "run")
    assert meta["step"] == 3 and next(model.parameters()).device.type == "cpu"
    resumed = Trainer(cfg, _cfg(image_folder, tmp_path / "run", steps=4, device="cuda"),
                      progress=False)
    assert resumed.step == 3
    resumed.run()


def test_cuda_without_a_device_is_a_clear_error(image_folder, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ConfigError, match="no CUDA device"):
        Trainer(get_config("tiny"), _cfg(image_folder, tmp_path / "run", device="cuda"),
                progress=False)
