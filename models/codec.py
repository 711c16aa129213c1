"""The STCM codec: transforms, gains, hyper prior and the spatial-temporal context model composed
into one module, with the training forward pass.

Dataflow (paper Fig. 1a):

    x --g_a--> y --*gain_enc(q)--> y_q --h_a--> z --Q--> z_hat --h_s--> Psi
    (means, scales) = EntropyParameters(y_hat, Psi, y_ref)    # masked: causal per group
    y_hat = round(y_q - means) + means --*gain_dec(q)--> latent --g_s--> x_hat

``latent`` (the de-gained y_hat, what g_s sees) is also what a later image of the same place
reads as its temporal reference, so the reference does not depend on the quality it was coded at.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stcm.errors import ConfigError, NotFrozenError
from stcm.config import ModelConfig
from stcm.models.entropy_bottleneck import EntropyBottleneck, FactorizedTables
from stcm.models.entropy_parameters import EntropyParameters
from stcm.models.gain import GainUnits
from stcm.models.latent_shift import LatentShift
from stcm.quality import check_quality
from stcm.models.gaussian import gaussian_likelihood, quantize_noise, quantize_ste
from stcm.models.transforms import (PAD_MULTIPLE, analysis, hyper_analysis, hyper_synthesis,
                                    synthesis)


@dataclass
class ForwardOutput:
    """Result of the training forward pass for a batch of B images of H x W pixels."""

    x_hat: torch.Tensor | None  # (B, 3, H, W) reconstruction, cropped to the input size
    y_likelihoods: torch.Tensor  # (B, M, h, w)
    z_likelihoods: torch.Tensor  # (B, N, h/4, w/4)
    latent: torch.Tensor  # (B, M, h, w) de-gained y_hat: g_s input and temporal reference
    means: torch.Tensor  # (B, M, h, w)
    scales: torch.Tensor  # (B, M, h, w)
    num_pixels: int  # H * W of the unpadded input

    def bits(self) -> torch.Tensor:
        """Estimated bits per image, (B,): -log2 of all likelihoods."""
        y = -torch.log2(self.y_likelihoods).flatten(1).sum(1)
        z = -torch.log2(self.z_likelihoods).flatten(1).sum(1)
        return y + z

    def bpp(self) -> torch.Tensor:
        return self.bits() / self.num_pixels


def pad_amount(h: int, w: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    """Rows and columns to add at the bottom and right so both sides divide ``multiple``."""
    return (-h) % multiple, (-w) % multiple


def pad_image(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Replicate-pads (B, C, H, W) at the bottom/right to multiples of ``multiple``; replicated
    borders cost fewer bits than zeros."""
    ph, pw = pad_amount(x.shape[-2], x.shape[-1], multiple)
    return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x


@dataclass(frozen=True)
class CodingState:
    """The frozen coding tables of a model."""

    z: FactorizedTables
    gain_enc: np.ndarray  # (L, M) float32 gains of the trained levels
    gain_dec: np.ndarray

    PREFIX = "coding."

    def to_tensors(self) -> dict[str, torch.Tensor]:
        arrays = {"gain_enc": self.gain_enc, "gain_dec": self.gain_dec, "z_pmfs": self.z.pmfs,
                  "z_lengths": self.z.lengths, "z_offsets": self.z.offsets,
                  "z_medians": self.z.medians}
        return {self.PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> "CodingState":
        """Inverse of ``to_tensors`` (keys with or without the prefix); KeyError if one lacks."""
        get = lambda k: tensors[cls.PREFIX + k].numpy()  # noqa: E731
        z = FactorizedTables(pmfs=get("z_pmfs").astype(np.float64),
                             offsets=get("z_offsets").astype(np.int32),
                             lengths=get("z_lengths").astype(np.int32),
                             medians=get("z_medians").astype(np.float32))
        return cls(z, get("gain_enc").astype(np.float32), get("gain_dec").astype(np.float32))


class STCM(nn.Module):
    """Spatial-Temporal Context Model codec (the paper's ELIC + Our-STM)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.g_a = analysis(cfg)
        self.g_s = synthesis(cfg)
        self.h_a = hyper_analysis(cfg)
        self.h_s = hyper_synthesis(cfg)
        self.entropy_bottleneck = EntropyBottleneck(cfg.N)
        self.gain = GainUnits(cfg.lambdas, cfg.M)
        self.entropy_parameters = EntropyParameters(cfg)
        if cfg.latent_shift:
            self.latent_shift = LatentShift(cfg.M)
        self._coding: CodingState | None = None

    # -- training ---------------------------------------------------------------------------
    def _quality_tensor(self, quality, batch: int) -> torch.Tensor:
        check_quality(quality)
        q = torch.as_tensor(quality, dtype=torch.float32).flatten()
        if q.numel() == 1:
            q = q.expand(batch)
        if q.numel() != batch:
            raise ConfigError(f"got {q.numel()} qualities for a batch of {batch} images")
        return q.to(self.gain.log_enc.device)

    def forward(self, x: torch.Tensor, quality=1.0, reference: torch.Tensor | None = None,
                synthesize: bool = True) -> ForwardOutput:
        """Training/evaluation forward pass with estimated rates.

        Args:
            x: (B, in_channels, H, W) images scaled to [0, 1]; any H, W (padded internally).
            quality: a float in [0, 1] or one per image.
            reference: ``latent`` of the reference image of the same place (from an earlier
                forward on an image of the same size), or None for the first image of a series.
            synthesize: False skips g_s (``x_hat`` None) where only the rates count.
        """
        if x.dim() != 4 or x.shape[1] != self.cfg.in_channels:
            raise ConfigError(f"expected images of shape (B, {self.cfg.in_channels}, H, W), "
                              f"got {tuple(x.shape)}")
        b, _, h, w = x.shape
        q = self._quality_tensor(quality, b)
        gain_enc, gain_dec = self.gain.gains(q)

        y = self.g_a(pad_image(x)) * gain_enc
        if reference is not None and reference.shape != y.shape:
            raise ConfigError(f"reference latent {tuple(reference.shape)} does not match this "
                              f"image's latent {tuple(y.shape)}; code references of equal size")
        z = self.h_a(y)
        z_lik = self.entropy_bottleneck.likelihood(
            self.entropy_bottleneck.quantize(z, noise=self.training))
        hyper = self.h_s(self.entropy_bottleneck.quantize(z, noise=False))

        # The context sees rounded y: mean-shifted values are not known before the means are,
        # and the gap to the decoder's y_hat is below one quantisation step (as in CompressAI).
        y_ctx = (quantize_ste(y) if self.training
                 else self._mean_shift_fixed_point(y, hyper, reference, gain_enc))
        means, scales = self.entropy_parameters(y_ctx, hyper, reference, gain_enc)
        y_rate = quantize_noise(y) if self.training else quantize_ste(y, means)
        y_lik = gaussian_likelihood(y_rate, means, scales, self.cfg.scale_min)
        y_hat = quantize_ste(y, means)
        latent = y_hat * gain_dec
        x_hat = self.g_s(latent)[:, :, :h, :w] if synthesize else None
        return ForwardOutput(x_hat, y_lik, z_lik, latent, means, scales, h * w)

    def _mean_shift_fixed_point(self, y, hyper, reference, gain_enc):
        # At evaluation, approximate the decoder's mean-shifted y_hat with a few fixed-point
        # sweeps; the runtime computes it exactly step by step.
        y_hat = torch.round(y)
        for _ in range(2):
            means, _ = self.entropy_parameters(y_hat, hyper, reference, gain_enc)
            y_hat = torch.round(y - means) + means
        return y_hat

    def aux_loss(self) -> torch.Tensor:
        return self.entropy_bottleneck.aux_loss()

    # -- coding phase ------------------------------------------------------------------------
    @torch.no_grad()
    def coding_state(self) -> "CodingState":
        """Coding tables computed from the current weights: z's factorized prior and the
        per-level gains. Checkpoints store them (``pinned``), so every machine codes with
        the same tables instead of recomputing exp/sigmoid with its own libraries."""
        gain_enc, gain_dec = self.gain.level_gains()
        return CodingState(self.entropy_bottleneck.coding_tables(), gain_enc, gain_dec)

    def freeze(self, state: "CodingState | None" = None) -> "STCM":
        """Fixes the coding tables (computed from the current weights, or the given pinned
        ones); required before any entropy coding. Returns self."""
        self._coding = state if state is not None else self.coding_state()
        return self

    @property
    def frozen(self) -> bool:
        return self._coding is not None

    @property
    def coding(self) -> "CodingState":
        if self._coding is None:
            raise NotFrozenError("the model has no coding tables yet; call model.freeze() after "
                                 "training or loading weights")
        return self._coding

    @property
    def z_tables(self) -> FactorizedTables:
        return self.coding.z
