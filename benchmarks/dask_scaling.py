"""A multi-date cube written to zarr with the stcm codec by a Dask ``LocalCluster`` of 1 and 2
workers: encode and decode throughput and how they scale.

    python benchmarks/dask_scaling.py [--dates 8] [--size 1024] [--chunk 512]
                                      [--time-chunk 1] [--quality 0.75] [--json OUT]

The cube is ``--dates`` dates x 3 bands x ``--size`` x ``--size`` of the bundled aerial RGB
sample, mirrored out (``common.sample_image``), each date shifted by 8 pixels more so that
no two are equal; chunks of ``--time-chunk`` dates x 3 bands x ``--chunk`` x ``--chunk``
(with 2+ dates a chunk is coded as one series). xarray writes it through the cluster
(``to_zarr``) and reads it back (``open_zarr(...).load()``), with the built-in model, one
thread per worker (``threads_per_worker=1``, torch on one thread). The model loads on every
worker before the clock starts: MP/s are the steady state. Needs ``pip install 'stcm[zarr]'``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the spawned workers

import numpy as np  # noqa: E402
import torch  # noqa: E402
import xarray as xr  # noqa: E402
from common import sample_image  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import stcm  # noqa: E402
from stcm.zarr import Stcm, StcmSerializer  # noqa: E402


def cube(dates: int, size: int) -> np.ndarray:
    base = sample_image(size + 8 * dates)
    return np.stack([base[:, 8 * t: 8 * t + size, 8 * t: 8 * t + size] for t in range(dates)])


def _warm(config: dict) -> int:
    """On a worker: one torch thread, and the model loaded (outside the timed runs)."""
    torch.set_num_threads(1)
    codec = Stcm.from_config({k: v for k, v in config.items() if k != "id"})
    codec.decode(codec.encode(np.zeros((1, 3, 64, 64), np.uint8)))
    return torch.get_num_threads()


def run(workers: int, ds: xr.Dataset, codec: Stcm, chunks: dict, folder: Path) -> dict:
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        threads = client.run(_warm, codec.get_config())
        store = folder / f"cube_{workers}.zarr"
        start = time.perf_counter()
        ds.chunk(chunks).to_zarr(store, zarr_format=3, consolidated=False, encoding={
            "reflectance": {"serializer": StcmSerializer(codec), "compressors": None}})
        encode = time.perf_counter() - start
        start = time.perf_counter()
        back = xr.open_zarr(store, consolidated=False).reflectance.load()
        decode = time.perf_counter() - start
    stored = sum(p.stat().st_size for p in (store / "reflectance" / "c").rglob("*")
                 if p.is_file())
    pixels = ds.reflectance.shape[0] * ds.reflectance.shape[2] * ds.reflectance.shape[3]
    err = back.values.astype(np.float64) - ds.reflectance.values
    return {"workers": workers, "worker_torch_threads": sorted(threads.values()),
            "encode_s": encode, "decode_s": decode, "encode_mp_s": pixels / 1e6 / encode,
            "decode_mp_s": pixels / 1e6 / decode, "bpp": 8 * stored / pixels,
            "psnr_db": float(10 * np.log10(255 ** 2 / np.mean(err ** 2)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dates", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--time-chunk", type=int, default=1)
    parser.add_argument("--quality", type=float, default=0.75)
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    pixels = cube(args.dates, args.size)
    ds = xr.Dataset({"reflectance": (("time", "band", "y", "x"), pixels)},
                    coords={"time": np.arange(args.dates), "band": [0, 1, 2]})
    codec = Stcm(quality=args.quality, layout="tchw")
    chunks = {"time": args.time_chunk, "band": 3, "y": args.chunk, "x": args.chunk}
    with tempfile.TemporaryDirectory() as folder:
        results = [run(n, ds, codec, chunks, Path(folder)) for n in (1, 2)]
    one, two = results
    print(f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, stcm "
          f"{stcm.__version__}; cube {args.dates} x 3 x {args.size} x {args.size} uint8, "
          f"chunks {args.time_chunk} x 3 x {args.chunk} x {args.chunk}, quality {args.quality}")
    for r in results:
        print(f"{r['workers']} worker(s): encode {r['encode_s']:.1f} s = "
              f"{r['encode_mp_s']:.3f} MP/s, decode {r['decode_s']:.1f} s = "
              f"{r['decode_mp_s']:.3f} MP/s; {r['bpp']:.3f} bpp, {r['psnr_db']:.2f} dB")
    speedup = {k: two[k] / one[k] for k in ("encode_mp_s", "decode_mp_s")}
    print(f"2 vs 1 worker: encode x{speedup['encode_mp_s']:.2f}, decode "
          f"x{speedup['decode_mp_s']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "cores": os.cpu_count(),
                       "torch": torch.__version__, "dates": args.dates, "size": args.size,
                       "chunk": args.chunk, "time_chunk": args.time_chunk,
                       "quality": args.quality, "runs": results,
                       "speedup_2_vs_1": speedup}, f, indent=1)


if __name__ == "__main__":
    main()
