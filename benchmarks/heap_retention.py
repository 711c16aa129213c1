"""Encode and decode time with and without ``runtime.heap`` keeping freed memory (the opt-in
``STCM_RETAIN_HEAP=1``), fresh processes.

    python benchmarks/heap_retention.py [--size 1024] [--rounds 3] [--repeat 3]
        [--engine DIR] [--json OUT]

Each round starts one process per setting, in turn, so that drift in the machine's speed hits
all alike: glibc's defaults (the default), freed memory retained (``STCM_RETAIN_HEAP=1``),
and transparent huge pages instead (torch's ``THP_MEM_ALLOC_ENABLE`` and glibc's
``glibc.malloc.hugetlb`` tunable: fewer, larger page faults, nothing retained). A process loads the built-in model (or
--engine), encodes the bundled aerial sample fitted to --size once (its first, cold run),
then decodes the stream --repeat times, counting the page faults of each call
(``getrusage``) and the process' peak resident memory. Printed: medians over rounds of the
cold encode, the first decode and the later decodes, and their ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from common import sample_image

# name -> environment of the child process
SETTINGS = {"glibc default": {"STCM_RETAIN_HEAP": "0"},
            "retained": {"STCM_RETAIN_HEAP": "1"},
            # transparent huge pages instead: torch's allocator madvises its >= 2 MB blocks,
            # glibc's (onnxruntime, NumPy) all of its own
            "huge pages": {"STCM_RETAIN_HEAP": "0", "THP_MEM_ALLOC_ENABLE": "1",
                           "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}


def child(size: int, repeat: int, engine: str | None) -> dict:
    from stcm.runtime.codec import Codec
    from stcm.runtime.heap import retain_freed_memory

    codec = Codec(engine=engine) if engine else Codec()
    image = sample_image(size)

    def timed(fn):
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        out = fn()
        return (time.perf_counter() - start,
                resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, out)

    encode, encode_faults, data = timed(lambda: codec.compress(image, 0.75))
    decodes = [timed(lambda: codec.decompress(data))[:2] for _ in range(repeat)]
    return {"retained": retain_freed_memory(), "encode_s": encode,
            "encode_faults": encode_faults, "decode_s": [d[0] for d in decodes],
            "decode_faults": [d[1] for d in decodes],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engine", help="an engine directory (onnxruntime) instead of the "
                                         "built-in model (torch)")
    parser.add_argument("--json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.size, args.repeat, args.engine)))
        return
    runs = {name: [] for name in SETTINGS}
    command = [sys.executable, __file__, "--child", "--size", str(args.size),
               "--repeat", str(args.repeat)] + (["--engine", args.engine] if args.engine else [])
    for round_ in range(args.rounds):
        for name, env in SETTINGS.items():
            out = subprocess.run(command, env={**os.environ, **env},
                                 capture_output=True, text=True, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: {runs[name][-1]}", flush=True)
    summary = {}
    for name, rs in runs.items():
        summary[name] = {
            "applied": all(r["retained"] for r in rs),
            "encode_s": statistics.median(r["encode_s"] for r in rs),
            "first_decode_s": statistics.median(r["decode_s"][0] for r in rs),
            "later_decode_s": statistics.median(t for r in rs for t in r["decode_s"][1:])
            if args.repeat > 1 else None,
            "decode_faults": statistics.median(f for r in rs for f in r["decode_faults"]),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in rs)}
    base = summary["glibc default"]
    print(f"{platform.machine()}, {'engine ' + args.engine if args.engine else 'built-in model'}"
          f", {args.size}x{args.size}, medians of {args.rounds} processes per setting")
    print(f"{'':15} {'encode s':>9} {'1st decode s':>13} {'later decode s':>15} "
          f"{'faults/decode':>14} {'peak RSS MB':>12}")
    for name, s in summary.items():
        later = f"{s['later_decode_s']:15.2f}" if s["later_decode_s"] is not None else " " * 15
        print(f"{name:15} {s['encode_s']:9.2f} {s['first_decode_s']:13.2f} {later} "
              f"{s['decode_faults']:14.0f} {s['peak_rss_mb']:12.0f}")
    ratios = {}
    for name, s in summary.items():
        if name == "glibc default":
            continue
        ratios[name] = {k: base[k] / s[k] for k in ("encode_s", "first_decode_s",
                                                    "later_decode_s") if base[k] is not None}
        ratios[name]["peak_rss"] = s["peak_rss_mb"] / base["peak_rss_mb"]
        print(f"{name} against the default: " + ", ".join(
            f"{k} {v:.2f}x" for k, v in ratios[name].items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "size": args.size,
                       "engine": args.engine, "runs": runs, "summary": summary,
                       "against_default": ratios}, f, indent=1)


if __name__ == "__main__":
    main()
