"""Training: rate-distortion optimisation (paper eq. 1) with variable rate, temporal pairs,
validation, and checkpoints that resume exactly (step, optimizer, RNG) across sessions, or
from the weights and step of a checkpoint alone (``resume``, e.g. a campaign's committed
fp16 copy, which is all a fresh clone has).

Each step draws a quality per image (half the time one of the trained levels, otherwise a
continuous value, so that interpolated qualities are trained too) and minimises
    bpp + lambda(q) * 255^2 * MSE  (+ the entropy bottleneck's auxiliary quantile loss).
With the temporal branch on, a share of the steps trains on (reference, current) pairs: the
reference is coded with no temporal context and the current image reads its latent.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from tqdm import tqdm

from stcm.atomic import atomic_path
from stcm.errors import CheckpointError, ConfigError
from stcm.models.checkpoint import (CHECKPOINT_NAME, init_weights, load_checkpoint, read_metadata,
                                   save_checkpoint)
from stcm.models.codec import STCM
from stcm.config import ModelConfig, get_config
from stcm.models.data import CropSampler, PairSampler, fixed_crops, list_images, split_by_scene
from stcm.models.revisit import synthetic_revisit
from stcm.models.schedule import LR_SCHEDULES, crop_and_batch, learning_rate
from stcm.models.temporal_units import TemporalUnits, grow_temporal, grows

STATE_NAME = "train_state.safetensors"
LOG_NAME = "log.jsonl"
VAL_QUALITIES = (0.0, 0.5, 1.0)
# The temporal prediction's lr as a multiple of --lr (see Trainer._make_optimizer).
PREDICTION_LR_SCALE = 20.0


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (recorded in the checkpoint's metadata)."""

    data: str
    out: str
    steps: int = 1000
    batch_size: int = 8
    crop: int = 256
    lr: float = 1e-4
    aux_lr: float = 1e-3
    lr_schedule: str = "step"  # one of LR_SCHEDULES (models/schedule.py)
    lr_drop_at: float = 0.8  # ``step``: fraction of ``steps`` after which the lr drops 10x
    lr_floor: float = 0.01  # ``cosine``: final lr as a fraction of ``lr``
    warmup: int = 0  # steps of linear lr warm-up after each start with a fresh optimizer
    final_crop: int | None = None  # crop from ``final_crop_at * steps`` on (batch shrinks)
    final_crop_at: float = 0.75
    seed: int = 0
    temporal_prob: float = 0.5
    unrelated_share: float = 0.1  # of the synthetic pairs: an unrelated crop, not a revisit
    pairs: str | None = None  # CSV of real (reference, current) pairs; else synthetic revisits
    val: str | None = None  # folder of validation scenes; else whole files split off ``data``
    val_fraction: float = 0.1
    val_crops: int = 8
    val_every: int = 200
    ckpt_every: int = 200
    ckpt_minutes: float = 10.0  # also save when this long has passed since the last save
    grad_clip: float = 1.0
    threads: int | None = None
    init: str | None = None  # checkpoint to start from (e.g. a float model, fine-tuned exact)
    resume: str | None = None  # checkpoint whose weights and step to continue from (fresh Adam)
    half_copy: str | None = None  # also write an fp16 copy of every checkpoint here
    device: str = "cpu"
    # Share of training crops from natural photographs (files in a ``photo/`` folder, as
    # ``stcm data fetch`` writes them); no effect without such a folder; None: plain sqrt(area).
    photo_share: float | None = 0.2
    # Retrain the temporal branch alone (``models/temporal_units.py``): its hidden units from
    # this index on train and nothing else does, so images coded alone stay bit-identical. A
    # model with more temporal units than ``init`` is widened from it (the new units silent).
    temporal_keep: int | None = None

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError("steps and batch size must be >= 1")
        if self.crop < 16 or self.crop % 16:
            raise ConfigError(f"crop must be a multiple of 16 and >= 16, got {self.crop}")
        if not 0 <= self.temporal_prob <= 1:
            raise ConfigError(f"temporal_prob must be in [0, 1], got {self.temporal_prob}")
        if self.photo_share is not None and not 0 <= self.photo_share < 1:
            raise ConfigError(f"photo_share must be in [0, 1) or None, got {self.photo_share}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"lr schedule must be one of {LR_SCHEDULES}, got "
                              f"{self.lr_schedule!r}")
        if self.warmup < 0 or not 0 <= self.lr_floor <= 1:
            raise ConfigError("warmup must be >= 0 and lr_floor in [0, 1]")
        if self.final_crop is not None and (self.final_crop < 16 or self.final_crop % 16):
            raise ConfigError(f"final crop must be a multiple of 16 and >= 16, got "
                              f"{self.final_crop}")
        if not 0 <= self.final_crop_at <= 1:
            raise ConfigError(f"final_crop_at must be in [0, 1], got {self.final_crop_at}")
        if self.init and self.resume:
            raise ConfigError("give either init (weights, step 0) or resume (weights and step)")
        if self.device not in ("cpu", "cuda"):
            raise ConfigError(f"device must be cpu or cuda, got {self.device!r}")
        if self.temporal_keep is not None and self.temporal_keep < 1:
            raise ConfigError(f"temporal_keep must be >= 1, got {self.temporal_keep}")


def model_config(preset: str | None = None, resume: str | None = None,
                 **overrides) -> ModelConfig:
    """The config to train: ``preset`` (a ``stcm.config.PRESETS`` name) with ``overrides``;
    without a preset, the ``resume`` checkpoint's config with them, else ``small``'s."""
    if preset is None and resume:
        return dataclasses.replace(read_metadata(resume)[0], **overrides)
    return get_config(preset or "small", **overrides)


def psnr(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image for images in [0, 1]."""
    mse = (x - x_hat.clamp(0, 1)).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def rd_loss(model: STCM, x: torch.Tensor, quality: torch.Tensor, reference=None):
    """(loss, forward output): mean over the batch of bpp + lambda(q) 255^2 MSE."""
    out = model(x, quality, reference)
    mse = (x - out.x_hat).pow(2).flatten(1).mean(1)
    lam = model.gain.lambdas(quality).to(mse)
    return (out.bpp() + lam * 255 ** 2 * mse).mean(), out


class Trainer:
    """Owns the model, optimizer, samplers and RNG of one run; ``run()`` trains to the target
    step, resuming from ``out`` if a previous run left its state there."""

    def __init__(self, model_cfg: ModelConfig, cfg: TrainConfig, progress: bool = True):
        self.cfg = cfg
        self.progress = progress
        self.out = Path(cfg.out)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda: this torch build sees no CUDA device")
        self.device = torch.device(cfg.device)
        paths = list_images(cfg.data)
        if cfg.val:
            self.train_paths, self.val_paths = paths, list_images(cfg.val)
        else:
            self.train_paths, self.val_paths = split_by_scene(paths, cfg.val_fraction, cfg.seed)
        self._samplers: dict[int, tuple] = {}
        self.sampler, self.pairs = self._samplers_for(cfg.crop)
        self.val = torch.from_numpy(fixed_crops(self.val_paths, cfg.crop, cfg.val_crops, cfg.seed))
        self.rng = np.random.default_rng(cfg.seed)
        torch.manual_seed(cfg.seed)
        self.step = 0
        self.warm_from = 0  # the step Adam last started with empty moments
        self.resumed_from: dict | None = None
        self.fresh_modules: list[str] = []  # modules --init could not lend weights to
        self.throughput: dict | None = None  # of the last run(): steps/s, megapixels/s
        self._val_pairs: torch.Tensor | None = None  # revisits of the val crops (units only)
        self.model = STCM(model_cfg)
        # An earlier run in ``out`` wins over init/resume: rerunning the same command after an
        # interruption continues it exactly.
        self.exact_resume = (self.out / STATE_NAME).exists()
        if cfg.init and not self.exact_resume:
            if cfg.temporal_keep is not None and self._grows(cfg.init):
                self._init_grown(cfg.init)
            else:
                self.fresh_modules = init_weights(self.model, cfg.init)
        if cfg.resume and not self.exact_resume:
            self._resume_weights(model_cfg, cfg.resume)
        self.model.to(self.device)
        self.units = (TemporalUnits(self.model, cfg.temporal_keep)
                      if cfg.temporal_keep is not None else None)
        self.optimizer = self._make_optimizer()
        if self.exact_resume:
            self._resume(model_cfg)

    # -- set-up ------------------------------------------------------------------------------
    def _samplers_for(self, crop: int) -> tuple:
        """(crop sampler, pair sampler or None) of one crop size, made once."""
        if crop not in self._samplers:
            self._samplers[crop] = (
                CropSampler(self.train_paths, crop=crop, seed=self.cfg.seed,
                            photo_share=self.cfg.photo_share,
                            unrelated_share=self.cfg.unrelated_share),
                PairSampler(self.cfg.pairs, crop=crop) if self.cfg.pairs else None)
        return self._samplers[crop]

    def _resume_weights(self, model_cfg: ModelConfig, path: str) -> None:
        saved_cfg, meta = read_metadata(path)
        if saved_cfg != model_cfg:
            raise ConfigError(f"{path} holds a model of another config ({saved_cfg.name}); "
                              "resume it with its own config, or start from it with --init")
        init_weights(self.model, path)
        self.step = self.warm_from = int(meta.get("step", 0))
        self.resumed_from = {"path": str(path), "step": self.step}

    def _grows(self, path: str) -> bool:
        return grows(read_metadata(path)[0], self.model.cfg)

    def _init_grown(self, path: str) -> None:
        source, _ = load_checkpoint(path)
        cfg = self.model.cfg
        grown = grow_temporal(source, cfg.temporal_width, cfg.temporal_prediction, self.cfg.seed)
        self.model.load_state_dict(grown.state_dict())

    def _make_optimizer(self) -> torch.optim.Optimizer:
        if self.units is not None:
            groups = [{"params": self.units.unit_parameters(), "lr": self.cfg.lr}]
            if self.units.prediction_parameters():
                # Its weights start at zero and go to ~0.5-1 (a tap per channel that copies
                # the reference): at the units' lr Adam would take thousands of steps there.
                groups.append({"params": self.units.prediction_parameters(),
                               "lr": self.cfg.lr * PREDICTION_LR_SCALE,
                               "lr_scale": PREDICTION_LR_SCALE})
            return torch.optim.Adam(groups)
        aux = [self.model.entropy_bottleneck.quantiles]
        main = [p for n, p in self.model.named_parameters() if not n.endswith("quantiles")]
        return torch.optim.Adam([{"params": main, "lr": self.cfg.lr},
                                 {"params": aux, "lr": self.cfg.aux_lr}])

    def _resume(self, model_cfg: ModelConfig) -> None:
        saved_cfg, meta = read_metadata(self.out / CHECKPOINT_NAME)
        if saved_cfg != model_cfg:
            raise ConfigError(f"{self.out} holds a run of another model config ({saved_cfg.name});"
                              " use a new --out folder or the same config to resume")
        model, _ = load_checkpoint(self.out / CHECKPOINT_NAME)
        self.model.load_state_dict(model.state_dict())
        state_path = self.out / STATE_NAME
        try:
            tensors = load_file(str(state_path))
            with safe_open(str(state_path), framework="pt") as f:
                info = json.loads(f.metadata()["state"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot resume from {state_path}: {exc}") from exc
        opt_state = {"param_groups": info["param_groups"], "state": {}}
        for key, value in tensors.items():
            if key.startswith("opt."):
                _, idx, name = key.split(".", 2)
                opt_state["state"].setdefault(int(idx), {})[name] = value
        self.optimizer.load_state_dict(opt_state)
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and self.device.type == "cuda":
            torch.cuda.set_rng_state(tensors["rng.cuda"])
        self.rng.bit_generator.state = info["numpy_rng"]
        self.step = int(info["step"])
        self.warm_from = int(info.get("warm_from", 0))
        self.resumed_from = info.get("resumed_from")
        if meta.get("step") != self.step:
            raise CheckpointError(f"{self.out}: checkpoint (step {meta.get('step')}) and training "
                                  f"state (step {self.step}) disagree; was a save interrupted?")

    # -- one step ----------------------------------------------------------------------------
    def _qualities(self, n: int) -> torch.Tensor:
        levels = self.model.cfg.num_qualities
        discrete = self.rng.integers(0, levels, n) / max(levels - 1, 1)
        continuous = self.rng.random(n)
        pick = self.rng.random(n) < 0.5
        return torch.from_numpy(np.where(pick, discrete, continuous)).float()

    def _batch(self, pairs_only: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(current images, their references or None); ``pairs_only``: always pairs."""
        crop, n = crop_and_batch(self.step, self.cfg.steps, self.cfg.crop, self.cfg.batch_size,
                                 self.cfg.final_crop, self.cfg.final_crop_at)
        sampler, pairs = self._samplers_for(crop)
        temporal = pairs_only or (self.model.cfg.temporal
                                  and self.rng.random() < self.cfg.temporal_prob)
        if not temporal:
            return torch.from_numpy(sampler.batch(self.rng, n)).to(self.device), None
        source = pairs or sampler
        refs, curs = zip(*(source.pair(self.rng) for _ in range(n)))
        return (torch.from_numpy(np.stack(curs)).to(self.device),
                torch.from_numpy(np.stack(refs)).to(self.device))

    def train_step(self) -> dict:
        if self.units is not None:
            return self._units_step()
        self.model.train()
        x, ref = self._batch()
        q = self._qualities(x.shape[0]).to(self.device)
        reference = None
        losses = []
        if ref is not None:
            ref_loss, ref_out = rd_loss(self.model, ref,
                                        self._qualities(ref.shape[0]).to(self.device))
            losses.append(ref_loss)
            reference = ref_out.latent.detach()
        loss, out = rd_loss(self.model, x, q, reference)
        losses.append(loss)
        total = sum(losses) / len(losses) + self.model.aux_loss()
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], self.cfg.grad_clip)
        self.optimizer.step()
        self.step += 1
        pixels = x[:, 0].numel() * (1 if ref is None else 2)
        return {"loss": loss.item(), "bpp": out.bpp().mean().item(),
                "psnr": psnr(x, out.x_hat.detach()).mean().item(), "pixels": pixels}

    def _units_step(self) -> dict:
        """A step of the temporal units alone: revisit pairs only, the rate of the current
        image given its reference is all that depends on what trains."""
        x, ref = self._batch(pairs_only=True)
        n = x.shape[0]
        q = self._qualities(n)
        # Half the references at the current image's quality: an archive codes its dates of
        # one place alike; the other half keeps any pairing of qualities working.
        q_ref = torch.where(torch.from_numpy(self.rng.random(n) < 0.5), q, self._qualities(n))
        reference = self.units.reference_latent(ref, q_ref.to(self.device))
        with self.units.training():
            out = self.model(x, q.to(self.device), reference, synthesize=False)
        loss = out.bpp().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.units.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.units.after_step()
        self.step += 1
        return {"loss": loss.item(), "bpp": loss.item(), "pixels": 2 * x[:, 0].numel()}

    @torch.no_grad()
    def validate(self) -> dict:
        """Estimated bpp and PSNR of the validation crops at a few qualities (no noise); when
        the temporal units train, of synthetic revisits of them with the crop as reference,
        next to the bpp of coding them alone."""
        self.model.eval()
        if self.units is not None and self._val_pairs is None:
            rng = np.random.default_rng(self.cfg.seed)
            self._val_pairs = torch.from_numpy(np.stack([synthetic_revisit(c, rng)
                                                         for c in self.val.numpy()]))
        result = {}
        for q in VAL_QUALITIES:
            bpps, psnrs, alone = [], [], []
            for i in range(0, len(self.val), 4):
                x = self.val[i: i + 4].to(self.device)
                reference = None
                if self.units is not None:
                    reference = self.model(x, q, synthesize=False).latent
                    x = self._val_pairs[i: i + 4].to(self.device)
                    alone.append(self.model(x, q, synthesize=False).bpp().cpu())
                out = self.model(x, q, reference)
                bpps.append(out.bpp().cpu())
                psnrs.append(psnr(x, out.x_hat).cpu())
            result[f"q{q:g}"] = {"bpp": round(float(torch.cat(bpps).mean()), 4),
                                 "psnr": round(float(torch.cat(psnrs).mean()), 3)}
            if alone:
                result[f"q{q:g}"]["bpp_alone"] = round(float(torch.cat(alone).mean()), 4)
        return result

    # -- persistence -------------------------------------------------------------------------
    def save(self, validation: dict | None = None, throughput: dict | None = None) -> None:
        """Writes checkpoint and training state (each atomically; the step ties them), and
        the fp16 copy if the run keeps one."""
        meta = {"step": self.step, "train": dataclasses.asdict(self.cfg),
                "train_images": [str(p) for p in self.train_paths],
                "val_images": [str(p) for p in self.val_paths]}
        if validation:
            meta["validation"] = validation
        if throughput:
            meta["throughput"] = throughput
        if self.resumed_from:
            meta["resumed_from"] = self.resumed_from
        opt = self.optimizer.state_dict()
        tensors = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        for idx, values in opt["state"].items():
            for name, value in values.items():
                tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
        info = {"param_groups": opt["param_groups"], "step": self.step,
                "numpy_rng": self.rng.bit_generator.state, "warm_from": self.warm_from,
                "resumed_from": self.resumed_from}
        with atomic_path(self.out / STATE_NAME) as tmp:
            save_file(tensors, str(tmp), metadata={"state": json.dumps(info)})
        # The coding tables are computed with NumPy: a CUDA model is saved from a CPU copy.
        model = self.model if self.device.type == "cpu" else copy.deepcopy(self.model).cpu()
        save_checkpoint(model, self.out / CHECKPOINT_NAME, meta)
        if self.cfg.half_copy:
            save_checkpoint(model, self.cfg.half_copy, meta, half=True)

    def _log(self, record: dict) -> None:
        with open(self.out / LOG_NAME, "a") as f:
            f.write(json.dumps(record) + "\n")

    def _set_lr(self) -> None:
        c = self.cfg
        lr = learning_rate(c.lr, self.step, c.steps, schedule=c.lr_schedule, drop_at=c.lr_drop_at,
                           floor=c.lr_floor, warmup=c.warmup, warm_from=self.warm_from)
        self.optimizer.param_groups[0]["lr"] = lr
        for group in self.optimizer.param_groups[1:]:  # the aux group keeps its own lr
            if "lr_scale" in group:
                group["lr"] = lr * group["lr_scale"]

    def run(self) -> dict:
        """Trains until ``cfg.steps``; returns the final validation result."""
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=self.cfg.steps, initial=self.step, disable=not self.progress,
                   desc="train", unit="step", dynamic_ncols=True)
        ema: dict[str, float] = {}
        validation: dict = {}
        started = last_save = time.perf_counter()
        # Throughput of this process, training steps only (validation and saving excluded).
        busy, done, pixels = 0.0, 0, 0
        # A job scheduler or an ending session sends SIGTERM: save as for Ctrl-C, not lose up
        # to ckpt_every steps.
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while self.step < self.cfg.steps:
                self._set_lr()
                tick = time.perf_counter()
                stats = self.train_step()
                busy += time.perf_counter() - tick
                done += 1
                pixels += stats.pop("pixels")
                throughput = {"steps_per_s": round(done / busy, 4),
                              "megapixels_per_s": round(pixels / busy / 1e6, 4)}
                for k, v in stats.items():
                    ema[k] = v if k not in ema or not math.isfinite(ema[k]) else 0.9 * ema[k] + 0.1 * v
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()})
                last = self.step == self.cfg.steps
                if self.step % self.cfg.val_every == 0 or last:
                    validation = self.validate()
                    self._log({"step": self.step, "train": ema, "val": validation,
                               "lr": self.optimizer.param_groups[0]["lr"],
                               "seconds": round(time.perf_counter() - started, 1),
                               **throughput})
                overdue = time.perf_counter() - last_save > 60 * self.cfg.ckpt_minutes
                if self.step % self.cfg.ckpt_every == 0 or last or overdue:
                    self.save(validation, throughput)
                    last_save = time.perf_counter()
        except KeyboardInterrupt:
            self.save(validation, throughput if done else None)
            bar.write(f"interrupted: saved step {self.step} to {self.out}; run again to resume")
            raise
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        self.throughput = throughput if done else None
        return validation


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
