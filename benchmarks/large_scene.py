"""A large multispectral GeoTIFF end to end through the file path: time, MP/s, peak memory.

    python benchmarks/large_scene.py [--size 4096] [--bands 4] [--quality 0.75] [--threads 1]
                                     [--json OUT] [--keep DIR]

The bundled Sentinel-2 sample (uint16, 160 x 192) mirrored out to --size x --size with
--bands bands, written block by block (256-row strips) as a tiled, deflated GeoTIFF in a
temporary folder, so that building it needs a strip of memory, not the scene. Then
``compress_file`` and ``decompress_file`` (GeoTIFF out) each run in a fresh Python process
(the built-in model, torch backend, --threads threads) that reports its wall time and its
peak resident memory (``ru_maxrss``). Checks: the decoded file equals the in-memory decode
(``Codec.decompress``) of a window (the first 2048 x 2048 pixels: 4 synthesis blocks) in a
third process, and at sizes up to 4096 the container equals ``Codec.compress`` of the whole
array (bit-identity of the two paths).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

STRIP = 256
CHECK_WINDOW = 2048  # 2 x 2 synthesis blocks (SYNTHESIS_BLOCK x 16 pixels each)
WHOLE_CHECK_MAX = 4096


def _mirrored(n: int, period: int) -> np.ndarray:
    """Indexes 0..n-1 into a sample of ``period`` pixels mirrored out (0 1 .. p-1 p-1 .. 0)."""
    j = np.arange(n) % (2 * period)
    return np.where(j < period, j, 2 * period - 1 - j)


def write_scene(path: Path, size: int, bands: int) -> None:
    """The mirrored sample as a ``size`` x ``size`` tiled GeoTIFF, strip by strip."""
    import rasterio
    from rasterio.windows import Window

    from stcm import SAMPLES_DIR

    with rasterio.open(SAMPLES_DIR / "sentinel2_b234_8_uint16.tif") as src:
        sample, profile = src.read(), src.profile
    sample = sample[np.arange(bands) % sample.shape[0]]
    cols = _mirrored(size, sample.shape[2])
    profile.update(driver="GTiff", width=size, height=size, count=bands, tiled=True,
                   blockxsize=256, blockysize=256, compress="deflate", predictor=2,
                   bigtiff="if_safer")
    profile.pop("photometric", None)
    with rasterio.open(path, "w", **profile) as ds:
        for r0 in range(0, size, STRIP):
            rows = _mirrored(size, sample.shape[1])[r0: r0 + STRIP]
            ds.write(sample[:, rows][:, :, cols], window=Window(0, r0, size, len(rows)))


def _child(args) -> None:
    """One measured operation in this (fresh) process; prints a JSON line."""
    import resource
    import time

    import torch

    torch.set_num_threads(args.threads)
    from stcm.runtime.codec import Codec
    from stcm.runtime.files import compress_file, decompress_file

    codec = Codec(progress=False)
    start = time.perf_counter()
    out = {}
    if args.child == "compress":
        report = compress_file(codec, args.paths[0], args.paths[1], args.quality)
        out["bytes"] = report.compressed_bytes
    elif args.child == "decompress":
        decompress_file(codec, args.paths[0], args.paths[1])
    elif args.child == "check-window":
        import rasterio
        from rasterio.windows import Window

        n = CHECK_WINDOW
        with rasterio.open(args.paths[1]) as ds:
            n = min(n, ds.width, ds.height)
            written = ds.read(window=Window(0, 0, n, n))
        expected = codec.decompress(Path(args.paths[0]).read_bytes(), window=(0, 0, n, n))
        out["window"] = n
        out["max_abs_diff"] = int(np.abs(written.astype(np.int64) - expected).max())
    elif args.child == "check-whole":
        from stcm.runtime.imageio import read_raster
        from stcm.runtime.files import _extra

        raster = read_raster(args.paths[1])
        data = codec.compress(raster.pixels, args.quality, georef=raster.georef,
                              extra=_extra(raster.band_descriptions, raster.metadata))
        out["same_container"] = data == Path(args.paths[0]).read_bytes()
        decoded = codec.decompress(data)
        with __import__("rasterio").open(args.paths[2]) as ds:
            out["same_pixels"] = bool(np.array_equal(ds.read(), decoded))
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    print(json.dumps(out))


def _run(args, *extra) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--quality",
           str(args.quality), "--child", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True,
                          env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json")
    parser.add_argument("--keep", help="build the files in this folder and keep them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args)
    folder = Path(args.keep or tempfile.mkdtemp(prefix="stcm-large-"))
    folder.mkdir(parents=True, exist_ok=True)
    scene, stream, decoded = (folder / f"scene_{args.size}.tif", folder / "scene.stcm",
                              folder / "decoded.tif")
    for path in (stream, decoded):
        path.unlink(missing_ok=True)
    write_scene(scene, args.size, args.bands)
    mp = args.size ** 2 / 1e6
    encode = _run(args, "compress", str(scene), str(stream))
    decode = _run(args, "decompress", str(stream), str(decoded))
    window = _run(args, "check-window", str(stream), str(decoded))
    whole = (_run(args, "check-whole", str(stream), str(scene), str(decoded))
             if args.size <= WHOLE_CHECK_MAX else None)
    bpp = 8 * encode["bytes"] / args.size ** 2
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, shared with a training run",
        "threads": args.threads, "size": args.size, "bands": args.bands,
        "dtype": "uint16", "quality": args.quality, "megapixels": mp,
        "encode_s": encode["seconds"], "encode_mp_per_s": mp / encode["seconds"],
        "encode_peak_rss_gb": encode["peak_rss_gb"],
        "decode_s": decode["seconds"], "decode_mp_per_s": mp / decode["seconds"],
        "decode_peak_rss_gb": decode["peak_rss_gb"],
        "bpp": bpp, "compressed_bytes": encode["bytes"],
        "window_check": {"pixels": window["window"], "max_abs_diff": window["max_abs_diff"]},
        "whole_check": whole and {k: whole[k] for k in ("same_container", "same_pixels")},
    }
    print(f"{args.size}^2 x {args.bands} bands uint16, quality {args.quality}, {args.threads} "
          f"thread(s): encode {encode['seconds']:.1f} s ({result['encode_mp_per_s']:.3f} MP/s, "
          f"peak {encode['peak_rss_gb']:.2f} GB), decode {decode['seconds']:.1f} s "
          f"({result['decode_mp_per_s']:.3f} MP/s, peak {decode['peak_rss_gb']:.2f} GB), "
          f"{bpp:.3f} bpp; window {window['window']}^2 max |diff| {window['max_abs_diff']}"
          + (f"; whole: same container {whole['same_container']}, same pixels "
             f"{whole['same_pixels']}" if whole else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
