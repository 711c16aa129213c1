"""Encode-time latent refinement (Yang, Bamler & Mandt 2020, "Improving Inference for Neural
Image Compression", NeurIPS): optimise one image's latents against the model's own
rate-distortion loss before coding them.

g_a and h_a are amortised inference: trained to give good latents on average over the
training set, not the best latents for the image at hand. Refinement starts from their
output (y, z) and takes gradient steps on the training loss of this one image,

    bpp(y, z) + lambda(q) * 255^2 * MSE(x, g_s(y_hat * gain_dec(q)))

with every weight fixed, so the decoder is unchanged and any decoder of the same model reads
the result. The loss needs rounded latents, whose gradient is zero; a differentiable
relaxation of the rounding stands in during the gradient steps (``SGA`` or ``STE``, below),
and every iterate is scored with true rounding (``rd_estimate``, the model's own evaluation
estimate), the best one being returned. The latents returned are therefore never worse than
the start by that estimate; the coded bytes can still differ from it slightly (the coder's
scale table, the exact step-by-step means).

y is rounded around its means (y_hat = round(y - mean) + mean) and the means depend on the
decoded y through the context model: in a gradient step the context reads the previous
iterate's y_hat with a straight-through gradient, and the exact entropy path (``quant.py``)
is made differentiable with ``quant.straight_through``, which changes no value it computes.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from stcm.errors import ConfigError
from stcm.models.codec import STCM
from stcm.quality import check_quality
from stcm.models.gaussian import gaussian_likelihood
from stcm.models.quant import ste_round, straight_through

METHODS = ("sga", "ste")
DEFAULT_METHOD = "sga"
# Adam's step is about lr per element whatever the gradient's size, and y lives on a grid of
# unit steps. The paper's 5e-3 is for thousands of steps; at the 10-200 steps an encoder can
# afford it moves a latent too little: over 50 steps (the crops of ``refine_latents``'s
# docstring, qualities 0, 0.5 and 1) 5e-3 lowered the estimated loss by 4.4 % on average,
# 1e-2 by 6.0 %, 2e-2 by 6.7 %, while 5e-2 overshot at low quality (no better latent in 10
# steps at quality 0). 2e-2 moves a latent by up to a bin in 50 steps:
# enough to flip the rounding of those near a bin edge, where the gain is.
DEFAULT_LR = 2e-2
# SGA temperature: held at TAU_MAX for the first WARMUP share of the steps, then cooled
# exponentially to TAU_END at the last step. The paper's reference code holds 0.5 for 700
# steps, then decays at 1e-3 per step (0.14 after 2000); the same shape is stretched over
# any step count here, so a short refinement still ends close to hard rounding.
TAU_MAX, TAU_END, WARMUP = 0.5, 0.1, 0.35
# Refinement runs g_s and the entropy model on the whole band group with gradients (no
# blocks): measured with the built-in small model, peak memory grows by about 1.1 GB per
# megapixel (4.7 GB at 2048 x 2048). Larger band groups are refused rather than left to
# exhaust a machine's memory.
MAX_PIXELS = 2048 * 2048
MEMORY_PER_MP = "about 1.1 GB per megapixel"
_EPS = 1e-5


@dataclass(frozen=True)
class RDEstimate:
    """The model's estimate of one image's coding cost, with true rounding."""

    loss: float  # bpp + lambda * 255^2 * MSE
    bpp: float  # -log2 of the likelihoods of y_hat and z_hat, per pixel
    mse: float  # of the clamped reconstruction, images in [0, 1]


@dataclass(frozen=True)
class Refined:
    """What ``refine_latents`` returns: the best latents and how they score."""

    y: torch.Tensor  # (1, M, h, w), to be coded around its means as usual
    z: torch.Tensor  # (1, N, h/4, w/4), to be coded with the factorized prior as usual
    initial: RDEstimate  # of the latents refinement started from
    final: RDEstimate  # of the latents returned (never above ``initial``)
    best_step: int  # the step that produced them; 0: the initial latents were kept


def temperature(step: int, steps: int) -> float:
    """SGA temperature at ``step`` (0-based) of ``steps``: TAU_MAX, then exponentially to
    TAU_END (see the constants for why).

    Example:
        >>> round(temperature(0, 100), 3), round(temperature(99, 100), 3)
        (0.5, 0.1)
    """
    start = int(WARMUP * steps)
    if step < start or steps - 1 <= start:
        return TAU_MAX
    frac = (step - start) / (steps - 1 - start)
    return TAU_MAX * math.exp(frac * math.log(TAU_END / TAU_MAX))


def sga_round(v: torch.Tensor, tau: float, generator: torch.Generator | None = None
              ) -> torch.Tensor:
    """One sample of stochastic Gumbel annealing (Yang et al. 2020, section 3.3): v rounded
    down or up at random, relaxed by a two-way Gumbel-softmax of temperature ``tau``.

    The logit of each direction is -atanh(distance to it) / tau, so the nearer integer is
    likelier and, as tau falls, the sample tends to round(v); the result is differentiable
    in v through the distances.
    """
    floor, ceil = torch.floor(v), torch.ceil(v)
    down = -torch.atanh((v - floor).clamp(_EPS, 1 - _EPS)) / tau
    up = -torch.atanh((ceil - v).clamp(_EPS, 1 - _EPS)) / tau
    # The difference of two standard Gumbel variables is standard logistic: one uniform
    # draw per element gives the two-way Gumbel-softmax weight of rounding up.
    u = torch.rand(v.shape, generator=generator, device=v.device, dtype=v.dtype)
    u = u.clamp(_EPS, 1 - _EPS)
    w_up = torch.sigmoid((up - down + torch.log(u) - torch.log1p(-u)) / tau)
    return floor + w_up * (ceil - floor)


@contextlib.contextmanager
def frozen_for_refinement(model: STCM):
    """Eval mode, no weight trainable, straight-through gradients through the exact layers;
    the model's mode and every parameter's ``requires_grad`` are restored on exit."""
    was_training = model.training
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    model.eval()
    for p in params:
        p.requires_grad_(False)
    try:
        with straight_through(model):
            yield model
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
        model.train(was_training)


class _Objective:
    """The rate-distortion loss of one image's latents, true or relaxed."""

    def __init__(self, model: STCM, x: torch.Tensor, lam: float,
                 gains: tuple[torch.Tensor, torch.Tensor], reference: torch.Tensor | None):
        self.model = model
        self.x = x
        self.lam = lam
        self.gain_enc, self.gain_dec = gains  # the encoder's: the temporal prediction reads it
        self.reference = reference
        self.pixels = x.shape[-2] * x.shape[-1]
        eb = model.entropy_bottleneck
        # z is coded around the pinned medians (what the coder uses) when there are any.
        medians = (torch.from_numpy(model.z_tables.medians) if model.frozen
                   else eb.medians.detach())
        self.medians = medians.to(x.device, x.dtype).view(1, -1, 1, 1)

    def _loss(self, y_hat, z_hat, means, scales):
        model = self.model
        z_bits = -torch.log2(model.entropy_bottleneck.likelihood(z_hat)).sum()
        y_bits = -torch.log2(gaussian_likelihood(y_hat, means, scales, model.cfg.scale_min)).sum()
        h, w = self.x.shape[-2:]
        # The decoder clamps its output to the normalised range, so the loss does too.
        x_hat = model.g_s(y_hat * self.gain_dec)[:, :, :h, :w].clamp(0, 1)
        mse = (self.x - x_hat).pow(2).mean()
        bpp = (y_bits + z_bits) / self.pixels
        return bpp + self.lam * 255 ** 2 * mse, bpp, mse

    @torch.no_grad()
    def estimate(self, y: torch.Tensor, z: torch.Tensor) -> tuple[RDEstimate, torch.Tensor]:
        """(estimate, y_hat) with true rounding, as the model's evaluation forward does it:
        the mean-shifted y_hat from two fixed-point sweeps of the context model."""
        model = self.model
        z_hat = torch.round(z - self.medians) + self.medians
        hyper = model.h_s(z_hat)
        y_hat = model._mean_shift_fixed_point(y, hyper, self.reference, self.gain_enc)
        means, scales = model.entropy_parameters(y_hat, hyper, self.reference, self.gain_enc)
        y_hat = torch.round(y - means) + means
        loss, bpp, mse = self._loss(y_hat, z_hat, means, scales)
        return RDEstimate(float(loss), float(bpp), float(mse)), y_hat

    def relaxed(self, y, z, y_ctx, quantize) -> torch.Tensor:
        """The loss with ``quantize`` standing in for rounding; ``y_ctx`` is the y_hat the
        context model reads (the last true-rounded one, passed straight through to y)."""
        model = self.model
        z_t = quantize(z - self.medians) + self.medians
        hyper = model.h_s(z_t)
        ctx = y + (y_ctx - y).detach()
        means, scales = model.entropy_parameters(ctx, hyper, self.reference, self.gain_enc)
        y_t = quantize(y - means) + means
        return self._loss(y_t, z_t, means, scales)[0]


def check_refinable(steps: int, height: int, width: int) -> None:
    """ConfigError unless ``steps`` is a step count and a ``height`` x ``width`` band group
    fits refinement's memory limit (checked before any work: the codec calls it first)."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"refinement steps must be a non-negative integer, got {steps!r}")
    if steps and height * width > MAX_PIXELS:
        raise ConfigError(f"refinement runs a whole band group at once and needs "
                          f"{MEMORY_PER_MP}; {height}x{width} is above its memory limit of "
                          f"{MAX_PIXELS / 2 ** 20:.0f} MP: code without refinement or in pieces")


def rd_estimate(model: STCM, x: torch.Tensor, quality: float, y: torch.Tensor,
                z: torch.Tensor, *, reference: torch.Tensor | None = None,
                gains: tuple[torch.Tensor, torch.Tensor] | None = None) -> RDEstimate:
    """The model's estimate of coding (y, z) for image ``x`` at ``quality``, with true
    rounding: what ``refine_latents`` scores its iterates by (arguments as there)."""
    check_quality(quality)
    q = torch.tensor([float(quality)], device=y.device)
    with frozen_for_refinement(model):
        objective = _Objective(model, x, float(model.gain.lambdas(q)[0]),
                               _gains(model, q, gains, y), reference)
        return objective.estimate(y, z)[0]


def _gains(model: STCM, q: torch.Tensor, gains, like: torch.Tensor) -> tuple:
    """The given (encoder, decoder) gains on ``like``'s device, or the model's own at q."""
    return tuple(g.to(like) for g in (gains if gains is not None else model.gain.gains(q)))


def refine_latents(model: STCM, x: torch.Tensor, quality: float, y: torch.Tensor,
                   z: torch.Tensor, steps: int, *, reference: torch.Tensor | None = None,
                   gains: tuple[torch.Tensor, torch.Tensor] | None = None,
                   lr: float = DEFAULT_LR,
                   method: str = DEFAULT_METHOD, seed: int = 0,
                   on_step: Callable[[], None] | None = None) -> Refined:
    """Refines the latents (y, z) of one band group by ``steps`` Adam steps on the
    rate-distortion loss at ``quality``; returns the best iterate by true rounding.

    The relaxation is SGA (stochastic Gumbel annealing) by default: measured on the built-in
    model (estimated loss, 128 px central crops of the held-out NEON OSBS_029 and Landsat
    224077 scenes, qualities 0 and 1, lr 2e-2), 50 SGA steps lowered it by 6.9 % on average
    and straight-through rounding by 4.9 %, and STE found no better latent at all at
    quality 0, where most latents round to their mean and a hard rounding has no useful
    gradient; at 10 steps SGA gave -2.7 %, STE -2.3 %. SGA draws its random roundings from a
    generator seeded with ``seed``, so the same call gives the same latents.

    Args:
        model: the STCM (exact or float); its weights are not changed, nor its mode.
        x: (1, in_channels, H, W) the normalised band group in [0, 1], unpadded.
        quality: in [0, 1]; gives lambda (``model.gain.lambdas``).
        y: (1, M, h, w) the latent as the coder would code it: g_a of the padded image
            times the encoder gain.
        z: (1, N, h/4, w/4) h_a(y).
        steps: number of gradient steps; 0 returns (y, z) unchanged.
        reference: the temporal reference latent the coder will use, or None.
        gains: (encoder, decoder) gains, each (1, M, 1, 1), that the coder uses (its pinned
            ones); None: the model's own at ``quality``.
        lr: Adam's learning rate (see DEFAULT_LR).
        method: ``sga`` or ``ste`` (straight-through rounding, ``quant.ste_round``).
        seed: seed of SGA's random roundings.
        on_step: called after every step (progress bars).

    Raises:
        ConfigError: bad ``steps``, ``method`` or ``quality``, or an image above MAX_PIXELS
            (``check_refinable``).
    """
    check_refinable(steps, x.shape[-2], x.shape[-1])
    if method not in METHODS:
        raise ConfigError(f"refinement method must be one of {METHODS}, got {method!r}")
    check_quality(quality)
    q = torch.tensor([float(quality)], device=y.device)
    lam = float(model.gain.lambdas(q)[0])
    with frozen_for_refinement(model):
        objective = _Objective(model, x, lam, _gains(model, q, gains, y), reference)
        start, y_hat = objective.estimate(y, z)
        if steps == 0:
            return Refined(y, z, start, start, 0)
        generator = torch.Generator(device=y.device).manual_seed(seed)
        y_var = y.detach().clone().requires_grad_(True)
        z_var = z.detach().clone().requires_grad_(True)
        optimizer = torch.optim.Adam([y_var, z_var], lr=lr)
        best, best_y, best_z, best_step = start, y, z, 0
        for step in range(steps):
            if method == "sga":
                tau = temperature(step, steps)
                quantize = lambda v, tau=tau: sga_round(v, tau, generator)  # noqa: E731
            else:
                quantize = ste_round
            with torch.enable_grad():
                loss = objective.relaxed(y_var, z_var, y_hat, quantize)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
            optimizer.step()
            current, y_hat = objective.estimate(y_var.detach(), z_var.detach())
            if current.loss < best.loss:
                best, best_step = current, step + 1
                best_y, best_z = y_var.detach().clone(), z_var.detach().clone()
            if on_step is not None:
                on_step()
    return Refined(best_y, best_z, start, best, best_step)
