"""Parameter counts and forward time per megapixel of each model preset on this machine.

    python benchmarks/model_forward.py [--size 512] [--repeat 3] [--threads N]

Times (median of --repeat runs after one warm-up) of: the analysis g_a, the synthesis g_s, and
the whole training-style forward pass in eval mode (transforms, hyper prior and full-tensor
context model), each in seconds per megapixel of input.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from stcm.models.checkpoint import parameter_counts
from stcm.models.codec import STCM
from stcm.config import PRESETS


def _median_time(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.rand(1, 3, args.size, args.size)
    mp = args.size * args.size / 1e6
    rows = []
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.size}x{args.size}")
    print(f"{'preset':<8}{'params':>12}{'g_a s/MP':>11}{'g_s s/MP':>11}{'forward s/MP':>14}")
    for name, cfg in PRESETS.items():
        model = STCM(cfg).eval()
        with torch.no_grad():
            y = model.g_a(x)
            t_ga = _median_time(lambda: model.g_a(x), args.repeat) / mp
            t_gs = _median_time(lambda: model.g_s(y), args.repeat) / mp
            t_fw = _median_time(lambda: model(x, 0.5), args.repeat) / mp
        params = parameter_counts(model)["total"]
        rows.append({"preset": name, "params": params, "g_a_s_per_mp": t_ga,
                     "g_s_s_per_mp": t_gs, "forward_s_per_mp": t_fw})
        print(f"{name:<8}{params:>12,}{t_ga:>11.3f}{t_gs:>11.3f}{t_fw:>14.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"size": args.size, "threads": torch.get_num_threads(), "rows": rows}, f,
                      indent=2)


if __name__ == "__main__":
    main()
