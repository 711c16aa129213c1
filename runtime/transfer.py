"""Host <-> device transfers of a step's parameters and symbols through pinned buffers.

Every decode step moves a few kilobytes: scale indexes' inputs to the host for the entropy
coder, decoded symbols back to the device. Page-locked (pinned) host memory lets those copies
run by DMA without an extra staging copy. On a CPU device this is a plain view.
"""
from __future__ import annotations

import numpy as np
import torch


class HostStaging:
    """Reusable pinned buffers; a downloaded array is valid until the next download."""

    def __init__(self):
        self._buffers: dict[torch.dtype, torch.Tensor] = {}

    def _buffer(self, dtype: torch.dtype, numel: int) -> torch.Tensor:
        buf = self._buffers.get(dtype)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, 1 << 16), dtype=dtype, pin_memory=True)
            self._buffers[dtype] = buf
        return buf[:numel]

    def download(self, tensor: torch.Tensor) -> np.ndarray:
        """The tensor's values as a NumPy array (a view of a pinned buffer on CUDA)."""
        if tensor.device.type == "cpu":
            return tensor.reshape(-1).numpy()
        host = self._buffer(tensor.dtype, tensor.numel())
        host.copy_(tensor.reshape(-1), non_blocking=True)
        torch.cuda.current_stream(tensor.device).synchronize()
        return host.numpy()

    def upload(self, array: np.ndarray, device: torch.device) -> torch.Tensor:
        """A NumPy array as a tensor on ``device`` (through a pinned buffer on CUDA)."""
        source = torch.from_numpy(np.ascontiguousarray(array))
        if device.type == "cpu":
            return source
        host = self._buffer(source.dtype, source.numel())
        host.copy_(source.reshape(-1))
        return host.to(device, non_blocking=True).view(source.shape)
