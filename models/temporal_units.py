"""Retraining the temporal branch alone, with coding without a reference unchanged bit for bit.

The temporal branch of group k is ``conv3x3(M -> width) -> ReLU -> conv3x3(width -> 2 ck)``
on the reference latent; an image coded alone reads it with a zero reference, where it is
``W2 * relu(b1) + b2`` (with the border pattern of the zero padding). ``grow_temporal``
adds hidden units with a zero first-layer bias and zero output weights: with a zero
reference they output exactly zero, so the widened model codes every image alone as before,
and with a reference it starts from the old model's predictions. It can also add the
temporal prediction (``ModelConfig.temporal_prediction``): no bias, zero weights, so zero.

``TemporalUnits`` then trains only the new units' weights and the prediction (which reads
nothing but the reference, so it trains freely). Everything else keeps its value
and every quantizer its grid (eval mode, straight-through gradients): the old units, both
biases and the side projection. The exact layers pick each output row's weight grid from the
row's peak and accumulator bound, which the new output weights also enter: after each step,
rows whose grid they moved have them shrunk back (``after_step``). ``intra_unchanged``
checks the result.
"""
from __future__ import annotations

import torch
from torch import nn

from stcm.errors import ConfigError
from stcm.models.checkpoint import read_metadata
from stcm.models.codec import STCM, pad_image
from stcm.models.quant import straight_through


def _branches(model: STCM) -> list[nn.Module]:
    if not model.cfg.temporal:
        raise ConfigError("the model has no temporal branch to retrain")
    return list(model.entropy_parameters.temporal)


def kept_units(path) -> int:
    """How many temporal units of checkpoint ``path`` came before any retraining of the
    branch: a checkpoint of ``stcm train --temporal-units`` records it, any other keeps all."""
    cfg, meta = read_metadata(path)
    keep = (meta.get("train") or {}).get("temporal_keep")
    return cfg.temporal_width if keep is None else int(keep)


def grows(before, after) -> bool:
    """Whether config ``after`` is ``before`` with temporal units or the temporal
    prediction added, and nothing else changed (what ``grow_temporal`` makes)."""
    if not before.temporal or before.replace(temporal_width=after.temporal_width,
                                             temporal_prediction=after.temporal_prediction,
                                             name=after.name) != after:
        return False
    wider = after.temporal_width > before.temporal_width
    narrower = after.temporal_width < before.temporal_width
    added = after.temporal_prediction and not before.temporal_prediction
    dropped = before.temporal_prediction and not after.temporal_prediction
    return (wider or added) and not (narrower or dropped)


@torch.no_grad()
def grow_temporal(model: STCM, width: int | None = None, prediction: bool = False,
                  seed: int = 0) -> STCM:
    """A copy of ``model`` whose temporal branches have ``width`` hidden units (None: as
    many as now) and, with ``prediction``, a temporal prediction: the old units unchanged,
    the new ones and the prediction silent (they change nothing until trained)."""
    old_width = model.cfg.temporal_width
    width = old_width if width is None else width
    cfg = model.cfg.replace(temporal_width=width,
                            temporal_prediction=prediction or model.cfg.temporal_prediction)
    if not grows(model.cfg, cfg):
        raise ConfigError(f"temporal width {width} (the model has {old_width}) and prediction "
                          f"{prediction} add nothing to the model's temporal branch")
    wide = STCM(cfg)
    widen = width > old_width
    state = {k: v for k, v in model.state_dict().items()
             if not (widen and ".temporal." in k)}
    missing, unexpected = wide.load_state_dict(state, strict=False)
    if unexpected or any(".temporal." not in k and ".prediction." not in k for k in missing):
        raise RuntimeError(f"growing lost weights: {missing[:3]} {unexpected[:3]}")  # a bug
    if widen:
        _widen(model, wide, old_width, seed)
    if model.frozen:
        wide.freeze(model.coding)
    return wide.eval()


def _widen(model: STCM, wide: STCM, old_width: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for old, new in zip(_branches(model), _branches(wide)):
        (o1, o2), (n1, n2) = (old.net[0], old.net[2]), (new.net[0], new.net[2])
        n1.weight[:old_width] = o1.weight
        # Small random input weights so the new units differ from each other; their output
        # weights start at zero, so they contribute nothing yet.
        n1.weight[old_width:] = 0.01 * torch.randn(n1.weight[old_width:].shape, generator=gen)
        n1.bias.zero_()
        n1.bias[:old_width] = o1.bias
        n2.weight.zero_()
        n2.weight[:, :old_width] = o2.weight
        n2.bias.copy_(o2.bias)
        # The same input grids: the old units compute exactly what they did.
        for a, b in ((n1.act, o1.act), (n2.act, o2.act)):
            if a is not None:
                a.load_state_dict(b.state_dict())


class TemporalUnits:
    """Trains the temporal hidden units from ``keep`` on and the temporal prediction, if the
    model has one; the rest of ``model`` stays fixed.

    Use ``parameters()`` for the optimizer, run each forward inside ``training()`` and call
    ``after_step()`` after each optimizer step.
    """

    def __init__(self, model: STCM, keep: int):
        width = model.cfg.temporal_width
        if keep < 1:  # the kept units' weights pin the grids that intra coding reads
            raise ConfigError(f"keep at least one temporal unit, got {keep}")
        if keep > width:
            raise ConfigError(f"cannot keep {keep} temporal units of {width}")
        if keep == width and not model.cfg.temporal_prediction:
            raise ConfigError(f"the temporal branch has {width} hidden units and no "
                              f"prediction: keeping {keep} leaves nothing to train")
        self.model = model
        self.keep = keep
        self._layers: list[tuple[nn.Module, nn.Module]] = []  # (first, second) per group
        for p in model.parameters():
            p.requires_grad_(False)
        for branch in _branches(model):
            first, second = branch.net[0], branch.net[2]
            for layer, rows in ((first, True), (second, False)):
                mask = torch.zeros_like(layer.weight)
                if rows:
                    mask[keep:] = 1
                else:
                    mask[:, keep:] = 1
                layer.weight.requires_grad_(True)
                layer.weight.register_hook(lambda g, m=mask: g * m)
            self._layers.append((first, second))
        self._prediction = list(model.entropy_parameters.prediction)
        for p in self._prediction:
            p.conv.weight.requires_grad_(True)

    def parameters(self) -> list[nn.Parameter]:
        """Everything that trains: the units' weights, then the prediction's."""
        return self.unit_parameters() + self.prediction_parameters()

    def unit_parameters(self) -> list[nn.Parameter]:
        return [layer.weight for pair in self._layers for layer in pair]

    def prediction_parameters(self) -> list[nn.Parameter]:
        return [p.conv.weight for p in self._prediction]

    def training(self):
        """Context for a training forward: the model in eval mode (fixed quantizer grids,
        straight-through gradients), its top module and the trained layers in train mode
        (noisy rates as in ``stcm train``; straight-through weight rounding)."""
        model = self.model
        model.eval()
        model.training = True
        for first, second in self._layers:
            first.training = second.training = True
        for p in self._prediction:  # its input grid calibrates: nothing else reads it
            p.train()
        return straight_through(model)

    @torch.no_grad()
    def after_step(self) -> None:
        """Keeps what the kept units compute: each output row's weight grid is chosen from
        the row's peak and its accumulator bound (``quantize_weights``), so rows whose new
        weights would move it have those shrunk until it is back where it was."""
        for _, layer in self._layers:
            if layer.act is None:  # float model: no grids to keep
                continue
            weight = layer.weight
            silent = weight.clone()
            silent[:, self.keep:] = 0  # the widened model before training: the old grids
            want_w, want_b, _ = layer._quantized(weight=silent)
            for _ in range(64):
                got_w, got_b, _ = layer._quantized(weight=weight)
                moved = ((got_w[:, :self.keep] != want_w[:, :self.keep]).flatten(1).any(1)
                         | (got_b != want_b))
                if not bool(moved.any()):
                    break
                weight[moved, self.keep:] *= 0.8
            else:  # 0.8^64: the new weights are ~0 and cannot move a grid
                raise ArithmeticError("the kept units' weight grids could not be restored")

    @torch.no_grad()
    def reference_latent(self, x: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        """The reference's latent as the decoder has it, to within the mean shift (round(y)
        de-gained); no synthesis, no context model: a training step's reference is cheap."""
        gain_enc, gain_dec = self.model.gain.gains(quality)  # quality: (B,)
        return torch.round(self.model.g_a(pad_image(x)) * gain_enc) * gain_dec


@torch.no_grad()
def intra_unchanged(before: STCM, after: STCM, size: int = 32) -> bool:
    """Whether ``after``'s side projections (the first aggregation layer, which reads the
    temporal branch) compute exactly what ``before``'s do with no reference, in every group,
    at every position (borders included): then it codes every image alone the same, bit for
    bit. The branch's output is the same at any hyper prior and earlier groups, so zeros do."""
    cfg, ep_b, ep_a = before.cfg, before.entropy_parameters, after.entropy_parameters
    _branches(before)  # a model without the branch has nothing to compare
    hyper = torch.zeros(1, 2 * cfg.M, size, size)
    for k, group in enumerate(ep_b.group_slices()):
        y_prev = torch.zeros(1, group.start, size, size) if k else None
        if not torch.equal(ep_b.side(k, hyper, y_prev, None), ep_a.side(k, hyper, y_prev, None)):
            return False
    return True
