"""Decode programs: the step-by-step schedule of one channel group over a batch of tiles.

A program is driven by the scheduler as

    for t in range(program.num_steps):
        mean, scale = program.params(t)        # (B, C, n): the n positions of step t
        y_hat = decode-or-quantize(mean, scale)
        program.update(t, y_hat)

``positions(t)`` names the n frame positions of step t (the same for every tile of the
batch); ``valid[:, :, rows, cols]`` says which of them exist in each tile. This module holds
the interface, the per-variant step positions, and ``RecomputeProgram``: it recomputes the
whole masked stack on the whole tile at every step. That is the naive decoder (the test
oracle and benchmark baseline for ``diag``) and the right program for ``checkerboard``
(2 steps) and ``none`` (1 step). The fast diagonal program is ``wavefront.WavefrontProgram``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from stcm.models.context import SpatialContext
from stcm.models.entropy_parameters import ParamAggregation
from stcm.models.layers import MaskedResidualBlock
from stcm.models.masks import anchor_mask, decode_step_index, num_decode_steps


def step_positions(context: str, th: int, tw: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each step, the (rows, cols) of the frame positions it decodes, in coding order
    (rows ascending, then columns)."""
    steps = decode_step_index(context, th, tw)
    order = []
    for t in range(num_decode_steps(context, th, tw)):
        rows, cols = np.nonzero(steps == t)
        order.append((rows, cols))
    return order


def apply_stack(spatial: SpatialContext, y_hat: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The spatial context stack on whole tiles, re-zeroing padding positions after every
    layer so a padded edge tile equals the smaller zero-padded one."""
    anchors = None
    x = y_hat * valid
    if spatial.kind == "checkerboard":
        anchors = torch.from_numpy(anchor_mask(*y_hat.shape[-2:])).to(y_hat)
        x = x * anchors
    for layer in spatial.stack:
        if isinstance(layer, MaskedResidualBlock):
            h = torch.relu(layer.reduce(x)) * valid
            x = x + layer.expand(torch.relu(layer.masked(h)))
        else:
            x = layer(x)
        x = x * valid
    if anchors is not None:
        x = x * (1 - anchors)
    return x


class GroupProgram(ABC):
    """The decode schedule of one channel group for a batch of B tiles."""

    def __init__(self, context: str, aggregate: ParamAggregation, side: torch.Tensor,
                 valid: torch.Tensor):
        """
        Args:
            context: the spatial context variant.
            aggregate: the group's parameter aggregation.
            side: (B, A, th, tw) the group's side projection, split into tiles.
            valid: (B, 1, th, tw) real positions of each tile.
        """
        self.context = context
        self.aggregate = aggregate
        self.side = side
        self.valid = valid
        self.channels = aggregate.channels
        self.positions = step_positions(context, *side.shape[-2:])

    @property
    def num_steps(self) -> int:
        return len(self.positions)

    def valid_at(self, t: int) -> torch.Tensor:
        """(B, n) bool: which of step t's positions exist in each tile."""
        rows, cols = self.positions[t]
        return self.valid[:, 0, rows, cols] > 0

    @abstractmethod
    def params(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, scale), each (B, C, n), of the positions of step t."""

    @abstractmethod
    def update(self, t: int, y_hat: torch.Tensor) -> None:
        """Records the decoded values (B, C, n) of step t."""

    @abstractmethod
    def latent(self) -> torch.Tensor:
        """(B, C, th, tw) decoded latent of the group (zeros where padding)."""


class RecomputeProgram(GroupProgram):
    """Recomputes the whole masked stack on the whole tile batch at every step."""

    def __init__(self, context: str, spatial: SpatialContext | None, aggregate: ParamAggregation,
                 side: torch.Tensor, valid: torch.Tensor):
        super().__init__(context, aggregate, side, valid)
        self.spatial = spatial
        b, _, th, tw = side.shape
        self.y_hat = side.new_zeros(b, self.channels, th, tw)

    def params(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows, cols = self.positions[t]
        spatial = None
        if self.spatial is not None:
            spatial = apply_stack(self.spatial, self.y_hat, self.valid)[:, :, rows, cols]
            spatial = spatial.unsqueeze(-1)
        side = self.side[:, :, rows, cols].unsqueeze(-1)
        mean, scale = self.aggregate(side, spatial)
        return mean.squeeze(-1), scale.squeeze(-1)

    def update(self, t: int, y_hat: torch.Tensor) -> None:
        rows, cols = self.positions[t]
        self.y_hat[:, :, rows, cols] = y_hat * self.valid[:, :, rows, cols]

    def latent(self) -> torch.Tensor:
        return self.y_hat

