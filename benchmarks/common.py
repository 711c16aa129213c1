"""Shared pieces of the benchmarks: the images they run on and median timing."""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from stcm import SAMPLES_DIR
from stcm.runtime.imageio import read_raster


def median_time(fn, repeat: int) -> tuple[float, object]:
    """(median seconds over ``repeat`` calls, the last result)."""
    times, result = [], None
    for _ in range(max(1, repeat)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def interleaved_times(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Seconds of each of ``fns`` (name -> callable) over ``repeat`` rounds, one call of each
    per round, so that drift in the machine's speed hits all of them alike."""
    times = {name: [] for name in fns}
    for _ in range(max(1, repeat)):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def sample_image(size: int) -> np.ndarray:
    """The bundled aerial RGB sample, mirrored out to (3, size, size)."""
    pixels = read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels
    reps = -(-size // pixels.shape[1])
    tiled = np.tile(np.concatenate([pixels, pixels[:, ::-1]], axis=1), (1, reps, reps))
    return np.ascontiguousarray(tiled[:, :size, :size])


def sample_crops(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` random (3, size, size) crops of the bundled samples, random 3-band choices."""
    rng = np.random.default_rng(seed)
    images = [read_raster(p).pixels for p in sorted(SAMPLES_DIR.glob("*.tif"))]
    out = []
    for i in range(n):
        img = images[i % len(images)]
        r, c = (int(rng.integers(0, s - size + 1)) for s in img.shape[1:])
        bands = rng.choice(img.shape[0], 3, replace=False)
        out.append(img[bands, r: r + size, c: c + size])
    return out


_ENGINE_DIRS: list[tempfile.TemporaryDirectory] = []  # removed when the process ends


def engine_for(model, int8_synthesis: bool = False) -> Path:
    """``model`` (an STCM or a checkpoint path) exported to an engine directory in a temporary
    folder that lives as long as the process (for the ``--backend onnxruntime`` runs)."""
    from stcm.export.onnx import export_engine

    workdir = tempfile.TemporaryDirectory(prefix="stcm-bench-")
    _ENGINE_DIRS.append(workdir)
    engine = Path(workdir.name) / "engine"
    export_engine(model, engine, int8_synthesis=int8_synthesis, progress=False)
    return engine
