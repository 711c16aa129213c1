"""Decode programs: the step-by-step schedule of one channel group over a batch of tiles.

A program is driven by the scheduler as

    for t in range(program.num_steps):
        mean, scale = program.params(t)        # (B, C, n): the n positions of step t
        y_hat = decode-or-quantize(mean, scale)
        program.update(t, y_hat)

``positions[t]`` names the n frame positions of step t (the same for every tile of the
batch); ``valid_at(t)`` says which of them exist in each tile. This module holds the
interface, the per-variant step positions and ``RecomputeProgram``: it reruns the backend's
``recompute_k`` stage (the whole masked stack on the whole tile) at every step. That is the
naive decoder (test oracle and benchmark baseline for ``diag``) and the right program for
``checkerboard`` (2 steps) and ``none`` (1 step). The fast diagonal program is
``wavefront.WavefrontProgram``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from stcm.contexts import ContextVariant
from stcm.runtime.backends.base import Backend


def step_positions(context: ContextVariant, th: int, tw: int
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each step, the (rows, cols) of the frame positions it decodes, in coding order
    (rows ascending, then columns)."""
    steps = context.step_index(th, tw)
    return [np.nonzero(steps == t) for t in range(context.num_steps(th, tw))]


class GroupProgram(ABC):
    """The decode schedule of one channel group for a batch of B tiles.

    Args:
        backend: runs the group's stages.
        k: the group index.
        context: the spatial context variant.
        channels: the group's channel count.
        side: (B, A, th, tw) the group's side projection, split into tiles.
        valid: (B, 1, th, tw) real positions of each tile.
        prediction: (B, C, th, tw) the temporal prediction of the means, split into tiles,
            added to the stage's means (on their grid, so exactly); None: none.

    Arrays are float32, NumPy or CuPy (the backend's device, ``stcm.kernels.select``).
    """

    def __init__(self, backend: Backend, k: int, context: ContextVariant, channels: int, side,
                 valid, prediction=None):
        self.backend = backend
        self.k = k
        self.channels = channels
        self.side = side
        self.valid = valid
        self.prediction = prediction
        self.positions = step_positions(context, *side.shape[-2:])

    @property
    def num_steps(self) -> int:
        return len(self.positions)

    def valid_at(self, t: int):
        """(B, n) bool: which of step t's positions exist in each tile."""
        rows, cols = self.positions[t]
        return self.valid[:, 0, rows, cols] > 0

    @abstractmethod
    def params(self, t: int) -> tuple:
        """(mean, scale), each (B, C, n), of the positions of step t."""

    @abstractmethod
    def update(self, t: int, y_hat) -> None:
        """Records the decoded values (B, C, n) of step t."""

    @abstractmethod
    def latent(self):
        """(B, C, th, tw) decoded latent of the group (zeros where padding)."""


class RecomputeProgram(GroupProgram):
    """Recomputes the whole masked stack on the whole tile batch at every step."""

    def __init__(self, backend, k, context, channels, side, valid, prediction=None):
        super().__init__(backend, k, context, channels, side, valid, prediction)
        b, _, th, tw = side.shape
        self.uses_latent = context.spatial
        self.y_hat = np.zeros_like(side, shape=(b, channels, th, tw))

    def params(self, t: int) -> tuple:
        rows, cols = self.positions[t]
        inputs = (self.side, self.valid) + ((self.y_hat,) if self.uses_latent else ())
        mean, scale = self.backend.run(f"recompute_{self.k}", *inputs)
        mean = mean[:, :, rows, cols]
        if self.prediction is not None:
            mean = mean + self.prediction[:, :, rows, cols]
        return mean, scale[:, :, rows, cols]

    def update(self, t: int, y_hat) -> None:
        rows, cols = self.positions[t]
        self.y_hat[:, :, rows, cols] = y_hat * self.valid[:, :, rows, cols]

    def latent(self):
        return self.y_hat
