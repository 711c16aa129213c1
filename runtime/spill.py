"""A latent-sized array kept in a temporary file, read back a crop at a time.

The hyper prior Psi of a whole scene is the largest array coding holds (2M float32 channels
per latent position: 0.52 GB for a 10240^2 band group with the built-in model), yet the
scheduler only ever reads it a box of tiles at a time (``Scheduler._side_tiles``). Above
``SPILL_BYTES`` the codec therefore writes Psi, block by block as h_s makes it, to an
anonymous temporary file and reads each box back, so that its memory does not grow with the
scene. The values are float32 written and read unchanged: the streams are bit-identical to
holding Psi in memory (tested).

The file is laid out position-major, (H, W, C), so that a box is one read per row. It is
created in ``tempfile``'s directory (``TMPDIR``): where that is a RAM-backed tmpfs, point
``TMPDIR`` at a disk. NumPy only (CuPy arrays stay on the device).
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from stcm.errors import ResourceLimitError

# Latent arrays larger than this are spilled (the built-in model's Psi of ~7200^2 pixels).
SPILL_BYTES = 256 * 2 ** 20


class SpilledLatent:
    """A (1, C, H, W) float32 array in a temporary file; ``write`` fills it block by block
    (the ``write`` callback of ``runtime.blocks.run_blocked``), ``[:, :, rows, cols]`` reads
    a box back as a NumPy array. The file is deleted when the object is dropped or closed."""

    def __init__(self, channels: int, height: int, width: int,
                 directory: str | os.PathLike | None = None):
        self.shape = (1, channels, height, width)
        self.dtype = np.dtype(np.float32)
        self._size = channels * height * width * self.dtype.itemsize
        self._directory = directory if directory is not None else tempfile.gettempdir()
        try:
            self._file = tempfile.TemporaryFile(dir=directory)
            self._file.truncate(self._size)
        except OSError as exc:
            raise self._error(exc) from exc
        self._fd = self._file.fileno()

    def _error(self, exc: OSError) -> ResourceLimitError:
        return ResourceLimitError(
            f"cannot spill the hyper prior ({self._size / 2 ** 30:.2f} GB) to a temporary file "
            f"in {self._directory}: {exc}; set TMPDIR to a folder with that much free disk")

    def _offset(self, row: int, col: int) -> int:
        return (row * self.shape[3] + col) * self.shape[1] * self.dtype.itemsize

    def write(self, r0: int, r1: int, c0: int, c1: int, block) -> None:
        """Stores ``block`` (1, C, r1 - r0, c1 - c0) at rows r0:r1, columns c0:c1."""
        rows = np.ascontiguousarray(np.asarray(block, self.dtype)[0].transpose(1, 2, 0))
        if rows.shape != (r1 - r0, c1 - c0, self.shape[1]):
            raise ValueError(f"block {tuple(np.shape(block))} does not fit rows {r0}:{r1}, "
                             f"columns {c0}:{c1} of {self.shape}")
        try:
            for i, row in enumerate(rows):
                _write_all(self._fd, memoryview(row).cast("B"), self._offset(r0 + i, c0))
        except OSError as exc:  # e.g. the disk filled up
            raise self._error(exc) from exc

    def __getitem__(self, key) -> np.ndarray:
        """``[:, channels, rows, cols]`` with slices of step 1 (what the scheduler cuts)."""
        if not (isinstance(key, tuple) and len(key) == 4
                and all(isinstance(k, slice) for k in key)):
            raise TypeError(f"a spilled latent is read by 4 slices, got {key!r}")
        _, _, h, w = self.shape
        batch, channels, (r0, r1, rs), (c0, c1, cs) = key[0], key[1], key[2].indices(h), \
            key[3].indices(w)
        if rs != 1 or cs != 1 or batch != slice(None):
            raise TypeError(f"a spilled latent is read by step-1 slices, got {key!r}")
        out = np.empty((max(r1 - r0, 0), max(c1 - c0, 0), self.shape[1]), self.dtype)
        for i in range(out.shape[0] if out.size else 0):
            _read_all(self._fd, memoryview(out[i]).cast("B"), self._offset(r0 + i, c0))
        return out.transpose(2, 0, 1)[None][:, channels]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpilledLatent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _write_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        n = os.pwrite(fd, data, offset)
        data, offset = data[n:], offset + n


def _read_all(fd: int, buffer: memoryview, offset: int) -> None:
    while buffer:
        n = os.preadv(fd, [buffer], offset)
        if n == 0:
            raise OSError("the spill file ended early")
        buffer, offset = buffer[n:], offset + n
