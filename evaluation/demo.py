"""``stcm demo``: a round trip of the bundled samples, with real coded sizes, PSNR and times."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from stcm.evaluation.evaluate import mse, peak_value, psnr
from stcm.runtime.imageio import read_raster


@dataclass(frozen=True)
class DemoResult:
    """One sample coded and decoded: its shape, the container's size, PSNR and times."""

    name: str
    bands: int
    dtype: str
    height: int
    width: int
    bytes: int
    psnr: float  # dB, peak = the dtype's full range, as `stcm eval` measures it
    encode_s: float
    decode_s: float

    @property
    def bits_per_pixel(self) -> float:
        return 8 * self.bytes / (self.height * self.width)

    def __str__(self) -> str:
        mp = self.height * self.width / 1e6
        return (f"{self.name}: {self.bands} bands {self.dtype} {self.height}x{self.width} -> "
                f"{self.bytes:,} bytes, {self.bits_per_pixel:.3f} bpp, PSNR {self.psnr:.2f} dB, "
                f"encode {self.encode_s:.2f} s, decode {self.decode_s:.2f} s "
                f"({self.decode_s / mp:.2f} s/MP)")


def run_demo(codec, quality: float, folder: Path | None = None) -> list[DemoResult]:
    """Compresses and decompresses every GeoTIFF of ``folder`` (the bundled samples) with
    ``codec`` at ``quality``, georeference included."""
    from stcm import SAMPLES_DIR

    results = []
    for path in sorted(Path(folder or SAMPLES_DIR).glob("*.tif")):
        raster = read_raster(path)
        start = time.perf_counter()
        data = codec.compress(raster.pixels, quality, georef=raster.georef)
        encode = time.perf_counter() - start
        start = time.perf_counter()
        back = codec.decompress(data)
        decode = time.perf_counter() - start
        results.append(DemoResult(
            path.name, raster.bands, raster.pixels.dtype.name, raster.height, raster.width,
            len(data), psnr(mse(raster.pixels, back), peak_value(raster.pixels)), encode,
            decode))
    return results
