"""The entropy-parameter network: per channel group, hyper prior + channel context + temporal
context + spatial context -> (mean, scale) of the group's Gaussian (paper Fig. 1b, ELIC).

Decode order and what each group may see:

    for group k = 0 .. K-1:
        side_k  = [Psi, chan_k(y_hat[groups < k]), temp_k(y_ref)]     once per group
        pred_k  = predict_k(y_ref[group k] at the current quantisation step)   optional, once
        for each step of the group's spatial order:
            spat_k  = spatial_k(y_hat_k decoded so far)                  new positions only
            mean, scale = aggregate_k(side_k, spat_k);  mean += pred_k

The first 1x1 layer of ``aggregate_k`` is split into a side projection (with bias) and a
spatial projection (no bias): their sum equals one 1x1 convolution over the concatenation,
but the side part is computed once per group, not once per step.
"""
from __future__ import annotations

import torch
from torch import nn

from stcm.config import ModelConfig, QuantSpec
from stcm.contexts import context_variant
from stcm.models.context import SpatialContext
from stcm.models.layers import qconv
from stcm.models.quant import ActQuant, quantize_mean


class ChannelContext(nn.Module):
    """Reads all decoded groups before k (ELIC's channel context): three 5x5 convolutions."""

    def __init__(self, cin: int, width: int, cout: int, spec: QuantSpec | None = None):
        super().__init__()
        self.net = nn.Sequential(qconv(spec, cin, width, 5, signed=True), nn.ReLU(),
                                 qconv(spec, width, width, 5, signed=False), nn.ReLU(),
                                 qconv(spec, width, cout, 5, signed=False))

    def forward(self, y_prev: torch.Tensor) -> torch.Tensor:
        return self.net(y_prev)


class TemporalContext(nn.Module):
    """Reads the fully decoded latent of the reference image (paper section 3.3); every
    position of it is known before decoding starts, so no mask is needed."""

    def __init__(self, cin: int, width: int, cout: int, spec: QuantSpec | None = None):
        super().__init__()
        self.net = nn.Sequential(qconv(spec, cin, width, 3, signed=True), nn.ReLU(),
                                 qconv(spec, width, cout, 3, signed=False))

    def forward(self, y_ref: torch.Tensor) -> torch.Tensor:
        return self.net(y_ref)


class TemporalPrediction(nn.Module):
    """A prediction of group k's latent from the reference's same channels, added to the
    means (``ModelConfig.temporal_prediction``): a 3x3 convolution per channel, no bias.

    Its input is the reference latent times the current image's encoder gain, i.e. on the
    current image's quantisation step; its output lies on the means' grid, so the sum with
    the aggregation's means is exact. Without a reference (zeros) it is exactly zero, so
    images coded alone do not see it. It starts at zero (predicting nothing).
    """

    # Straight-through gradient of the mean rounding in eval mode (quant.straight_through).
    straight_through = False

    def __init__(self, channels: int, spec: QuantSpec | None = None):
        super().__init__()
        self.conv = qconv(spec, channels, channels, 3, signed=True, bias=False,
                          groups=channels)
        nn.init.zeros_(self.conv.weight)
        self.mean_bits = spec.mean_bits if spec is not None else None

    def forward(self, y_ref_q: torch.Tensor) -> torch.Tensor:
        pred = self.conv(y_ref_q)
        if self.mean_bits is not None:
            pred = quantize_mean(pred, self.mean_bits,
                                 ste=self.training or self.straight_through)
        return pred


class ParamAggregation(nn.Module):
    """Three 1x1 convolutions -> (mean, scale) of the group; the first one split in two.

    Exact models quantize both halves of the split layer onto one grid (``sum_q``) so their
    sum is exact in any order, and round the means onto the grid 2^-mean_bits.
    """

    # Straight-through gradient of the mean rounding in eval mode (quant.straight_through).
    straight_through = False

    def __init__(self, side_parts: tuple[int, ...], spatial_in: int, hidden: int,
                 channels: int, spec: QuantSpec | None = None):
        super().__init__()
        self.side_proj = qconv(spec, sum(side_parts), hidden, 1, signed=True, parts=side_parts)
        self.spatial_proj = (qconv(spec, spatial_in, hidden, 1, signed=True, bias=False)
                             if spatial_in else None)
        self.tail = nn.Sequential(nn.ReLU(), qconv(spec, hidden, hidden, 1, signed=False),
                                  nn.ReLU(), qconv(spec, hidden, 2 * channels, 1, signed=False))
        self.sum_q = ActQuant.of(spec, signed=True) if spec is not None else None
        self.mean_bits = spec.mean_bits if spec is not None else None
        self.channels = channels

    def _grid(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.sum_q is None else self.sum_q(x)

    def side(self, side_in: torch.Tensor) -> torch.Tensor:
        """The side half of the first layer (computed once per group)."""
        return self._grid(self.side_proj(side_in))

    def forward(self, side_pre: torch.Tensor, spatial: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``side_pre`` is ``side(side_in)``; ``spatial`` the spatial context features."""
        h = side_pre if spatial is None else side_pre + self._grid(self.spatial_proj(spatial))
        out = self.tail(h)
        mean, scale = out[:, : self.channels], out[:, self.channels:]
        if self.mean_bits is not None:
            mean = quantize_mean(mean, self.mean_bits,
                                 ste=self.training or self.straight_through)
        return mean, scale


class EntropyParameters(nn.Module):
    """All groups' context branches and aggregations."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.groups = cfg.groups
        self.has_spatial = context_variant(cfg.context).spatial
        self.channel = nn.ModuleList()
        self.temporal = nn.ModuleList()
        self.spatial = nn.ModuleList()
        self.aggregate = nn.ModuleList()
        self.prediction = nn.ModuleList()
        spec = cfg.quant_spec()
        for k, ck in enumerate(cfg.groups):
            prev = sum(cfg.groups[:k])
            chan_out = 2 * ck if k > 0 else 0
            temp_out = 2 * ck if cfg.temporal else 0
            feats = cfg.context_features(k)
            self.channel.append(ChannelContext(prev, cfg.channel_context_width, chan_out, spec)
                                if k > 0 else nn.Identity())
            self.temporal.append(TemporalContext(cfg.M, cfg.temporal_width, temp_out, spec)
                                 if cfg.temporal else nn.Identity())
            self.spatial.append(
                SpatialContext(cfg.context, ck, feats, cfg.context_layers, cfg.context_residual,
                               cfg.context_kernel, spec) if feats else nn.Identity())
            parts = tuple(p for p in (2 * cfg.M, chan_out, temp_out) if p)
            hidden = max(cfg.aggregation_mult * ck, 16)
            self.aggregate.append(ParamAggregation(parts, feats, hidden, ck, spec))
            if cfg.temporal_prediction:
                self.prediction.append(TemporalPrediction(ck, spec))

    def group_slices(self) -> list[slice]:
        starts = [sum(self.groups[:k]) for k in range(len(self.groups))]
        return [slice(s, s + c) for s, c in zip(starts, self.groups)]

    def side(self, k: int, hyper: torch.Tensor, y_prev: torch.Tensor | None,
             y_ref: torch.Tensor | None) -> torch.Tensor:
        """Side projection of group k (its first aggregation layer before the spatial term).

        Args:
            hyper: Psi, the hyper prior features (B, 2M, h, w).
            y_prev: decoded latent of groups < k (B, sum(groups[:k]), h, w); None for k = 0.
            y_ref: the reference image's decoded latent (B, M, h, w), or None (zeros: the
                first image of a series, paper section 3.3).
        """
        temporal = None
        if self.cfg.temporal:
            if y_ref is None:
                y_ref = hyper.new_zeros(hyper.shape[0], self.cfg.M, *hyper.shape[-2:])
            temporal = self.temporal[k](y_ref)
        return self.side_with(k, hyper, y_prev, temporal)

    def side_with(self, k: int, hyper: torch.Tensor, y_prev: torch.Tensor | None,
                  temporal: torch.Tensor | None) -> torch.Tensor:
        """``side`` given the temporal context's features (B, 2 ck, h, w) instead of the
        reference (None for models without the branch)."""
        parts = [hyper]
        if k > 0:
            parts.append(self.channel[k](y_prev))
        if temporal is not None:
            parts.append(temporal)
        return self.aggregate[k].side(torch.cat(parts, dim=1))

    def predict(self, k: int, y_ref: torch.Tensor | None, gain: torch.Tensor | None
                ) -> torch.Tensor | None:
        """Group k's temporal prediction of its means (B, ck, h, w), or None where the model
        has none or there is no reference.

        Args:
            y_ref: the reference's decoded latent (B, M, h, w), or None.
            gain: the current image's encoder gain (B or 1, M, 1, 1): the reference's latent
                times it is on the current image's quantisation step.
        """
        if not self.prediction or y_ref is None:
            return None
        if gain is None:  # programmer error
            raise ValueError("the temporal prediction needs the current image's encoder gain")
        sl = self.group_slices()[k]
        return self.prediction[k](y_ref[:, sl] * gain[:, sl])

    def forward(self, y_hat: torch.Tensor, hyper: torch.Tensor, y_ref: torch.Tensor | None = None,
                gain: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full-tensor (training / reference) computation of all groups' (means, scales).

        ``y_hat`` is the complete quantized latent; the masks make each position's parameters
        depend only on what the decoder has at that position's step. This is the oracle that
        the runtime's step-by-step wavefront must reproduce. ``gain`` is the encoder gain of
        ``y_hat``'s quality, needed by models with a temporal prediction when ``y_ref`` is set.
        """
        means, scales = [], []
        for k, sl in enumerate(self.group_slices()):
            side = self.side(k, hyper, y_hat[:, : sl.start] if k else None, y_ref)
            spatial = self.spatial[k](y_hat[:, sl]) if self.has_spatial else None
            mean, scale = self.aggregate[k](side, spatial)
            pred = self.predict(k, y_ref, gain)
            if pred is not None:
                mean = mean + pred
            means.append(mean)
            scales.append(scale)
        return torch.cat(means, dim=1), torch.cat(scales, dim=1)
