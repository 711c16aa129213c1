"""Where the wavefront step graphs' time goes: multiply-adds or re-reading their weights.

    python benchmarks/step_traffic.py [--config elic | --builtin | --engine ENGINE]
        [--size 512] [--repeat 3] [--json OUT]

Records every step call of one decode (the bundled aerial sample fitted to --size, quality
0.75) on an onnxruntime engine (``--config``: a random-init preset, ``--builtin``: the
built-in model, either exported first), then
replays each group's calls through the same backend (its thread settings) two ways, medians
of --repeat, the two interleaved:

- ``replay``: in decode order, as the decode runs them;
- ``hot``: each call run twice back to back, the second one timed: a group whose weights fit
  the cache finds them there; one whose weights do not reads them from memory again.

Floors: ``MAC floor`` = the calls' multiply-adds (each weight meets each row of the call's
window once) at this machine's measured fp32 GEMM rate; ``read floor`` = the calls' weight
bytes at this machine's measured memory read rate (a large array summed by as many threads
as the backend uses, 2 here). ``GB/s`` is the weight bytes the replay got through a second.
A group whose hot time equals its replay and whose GB/s is a sizeable share of the read rate
streams its weights from memory on every call; one far below it pays for operators and small
GEMMs instead. Last, the widest group's largest matrix at its calls' median rows as a bare
NumPy matmul, weights evicted and just used: how near the floors BLAS itself gets there.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import torch

from common import engine_for, sample_image
from stcm.config import get_config
from stcm.evaluation.bench import gemm_rate
from stcm.models.codec import STCM
from stcm.runtime.codec import Codec, default_model_path


def read_rate(threads: int, megabytes: int = 256, repeat: int = 5) -> float:
    """Bytes per second of summing a ``megabytes`` float32 array in ``threads`` parts at once
    (NumPy's sum releases the GIL)."""
    data = np.ones(megabytes << 18, np.float32)
    parts = np.array_split(data, threads)
    times = []
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeat):
            start = time.perf_counter()
            list(pool.map(np.sum, parts))
            times.append(time.perf_counter() - start)
    return data.nbytes / statistics.median(times)


def bare_gemm(path: Path, rows: int, flops: float, read: float, repeat: int = 15) -> dict:
    """The graph's largest weight matrix (Cout, K) times a (K, ``rows``) block as one bare
    NumPy matmul (its BLAS, no onnxruntime around it), with the weights evicted by reading a
    96 MB array first and with them just used: what the BLAS itself gets at this shape."""
    big = max((t for t in onnx.load(str(path)).graph.initializer if len(t.dims) == 2),
              key=lambda t: int(np.prod(t.dims)))
    cout, k = big.dims
    rng = np.random.default_rng(0)
    w = rng.standard_normal((cout, k)).astype(np.float32)
    x = rng.standard_normal((k, rows)).astype(np.float32)
    flush = np.ones(96 << 18, np.float32)
    cold, hot = [], []
    for _ in range(repeat):
        flush.sum()
        start = time.perf_counter()
        w @ x
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        w @ x
        hot.append(time.perf_counter() - start)
    return {"shape": [int(cout), int(k)], "rows": rows,
            "mac_floor_ms": 2e3 * cout * k * rows / flops, "read_floor_ms": 1e3 * w.nbytes / read,
            "cold_ms": 1e3 * statistics.median(cold), "hot_ms": 1e3 * statistics.median(hot)}


def weight_stats(path: Path) -> tuple[int, int]:
    """(float weights, their bytes) of an ONNX graph's initializers of rank >= 2."""
    count = 0
    for tensor in onnx.load(str(path)).graph.initializer:
        if len(tensor.dims) >= 2 and tensor.data_type == onnx.TensorProto.FLOAT:
            count += int(np.prod(tensor.dims))
    return count, 4 * count


def record_steps(codec: Codec, data: bytes) -> dict[str, list[tuple]]:
    """Every step call's inputs of one decode, by stage, in decode order."""
    calls: dict[str, list[tuple]] = {}
    run = codec.backend.run

    def spy(stage, *inputs):
        if stage.startswith("step_"):
            calls.setdefault(stage, []).append(tuple(np.array(a) for a in inputs))
        return run(stage, *inputs)

    codec.backend.run = spy
    try:
        codec.decompress(data)
    finally:
        del codec.backend.run
    return calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="elic")
    parser.add_argument("--builtin", action="store_true")
    parser.add_argument("--engine")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    label = (f"engine {args.engine}" if args.engine else "built-in model" if args.builtin
             else f"{args.config}, random init")
    if args.engine:
        engine = Path(args.engine)
    elif args.builtin:
        engine = engine_for(default_model_path())
    else:
        torch.manual_seed(0)
        engine = engine_for(STCM(get_config(args.config)).eval())
    codec = Codec(engine=engine, progress=False)
    data = codec.compress(sample_image(args.size), 0.75)
    calls = record_steps(codec, data)
    backend = codec.backend
    flops, read = gemm_rate(), read_rate(backend.threads or torch.get_num_threads())
    # rows of each call's window (tiles x rows per tile), what every weight meets once
    positions = {stage: [c[0].shape[0] * c[0].shape[-1] for c in stage_calls]
                 for stage, stage_calls in calls.items()}
    table = []
    for stage in sorted(calls):
        weights, nbytes = weight_stats(engine / backend.entries[stage]["file"])
        replay, hot = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for inputs in calls[stage]:
                backend.run(stage, *inputs)
            replay.append(time.perf_counter() - start)
            total = 0.0
            for inputs in calls[stage]:
                backend.run(stage, *inputs)
                start = time.perf_counter()
                backend.run(stage, *inputs)
                total += time.perf_counter() - start
            hot.append(total)
        table.append({"stage": stage, "calls": len(calls[stage]), "weight_mb": nbytes / 1e6,
                      "mac_floor_ms": 2e3 * weights * sum(positions[stage]) / flops,
                      "read_floor_ms": 1e3 * nbytes * len(calls[stage]) / read,
                      "replay_ms": 1e3 * statistics.median(replay),
                      "weight_gbps": nbytes * len(calls[stage]) / statistics.median(replay) / 1e9,
                      "hot_ms": 1e3 * statistics.median(hot)})
    print(f"{platform.machine()}, {args.size}x{args.size}, {label}; fp32 GEMM "
          f"{flops / 1e9:.0f} GFLOP/s, memory read {read / 1e9:.1f} GB/s; medians of "
          f"{args.repeat}")
    print("  stage   calls  weights MB  MAC floor ms  read floor ms  replay ms  hot ms  "
          "replay/hot  GB/s")
    for r in table:
        print(f"  {r['stage']:7s} {r['calls']:6d} {r['weight_mb']:11.1f} {r['mac_floor_ms']:13.1f} "
              f"{r['read_floor_ms']:14.1f} {r['replay_ms']:10.1f} {r['hot_ms']:7.1f} "
              f"{r['replay_ms'] / r['hot_ms']:11.2f} {r['weight_gbps']:5.1f}")
    widest = max(table, key=lambda r: r["weight_mb"])["stage"]
    median_rows = sorted(positions[widest])[len(positions[widest]) // 2]
    gemm = bare_gemm(engine / backend.entries[widest]["file"], median_rows, flops, read)
    print(f"  {widest}'s largest matrix {gemm['shape'][0]}x{gemm['shape'][1]} at {gemm['rows']} "
          f"rows (its calls' median), bare NumPy matmul: {gemm['cold_ms']:.2f} ms with the "
          f"weights evicted, {gemm['hot_ms']:.2f} ms just used; MAC floor "
          f"{gemm['mac_floor_ms']:.2f} ms, read floor {gemm['read_floor_ms']:.2f} ms")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "size": args.size, "model": label,
            "gemm_gflops": flops / 1e9, "read_gbps": read / 1e9, "repeat": args.repeat,
            "stages": table, "bare_gemm": {"stage": widest, **gemm}}, indent=2))


if __name__ == "__main__":
    main()
