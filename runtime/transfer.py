"""Host <-> device transfers of a step's parameters and symbols through pinned buffers.

Every decode step moves a few kilobytes: scale indexes to the host for the entropy coder,
decoded symbols back to the device. Downloads go through page-locked (pinned) host memory,
which the copy reaches by DMA without an extra staging copy. For NumPy arrays (the CPU)
both are plain views.
"""
from __future__ import annotations

import numpy as np

from stcm import kernels


class HostStaging:
    """Reusable pinned buffers; a downloaded array is valid until the next download."""

    def __init__(self):
        self._buffers: dict[np.dtype, np.ndarray] = {}

    def _buffer(self, dtype, numel: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        buf = self._buffers.get(dtype)
        if buf is None or buf.size < numel:
            import cupyx  # only reached with CuPy arrays

            buf = cupyx.empty_pinned(max(numel, 1 << 16), dtype)
            self._buffers[dtype] = buf
        return buf[:numel]

    def download(self, array) -> np.ndarray:
        """The array's values, flattened, as a NumPy array (a view of a pinned buffer for a
        CuPy array)."""
        if isinstance(array, np.ndarray):
            return array.reshape(-1)
        host = self._buffer(array.dtype, array.size)
        array.reshape(-1).get(out=host)  # synchronous on the current stream
        return host

    @staticmethod
    def upload(array: np.ndarray, device: str):
        """A NumPy array as an array on ``device`` (the same array on the CPU)."""
        return kernels.select(device).xp.asarray(array)


def to_host(array) -> np.ndarray:
    """A NumPy or CuPy array's values as a NumPy array (the same array for NumPy)."""
    return array if isinstance(array, np.ndarray) else array.get()

