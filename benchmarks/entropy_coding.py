"""Entropy coding alone: stcm's ANS path (constriction) vs CompressAI 1.2.8's C++ rANS, on
the same symbols and the same Gaussian scale table.

    COMPRESSAI_PATH=... python benchmarks/entropy_coding.py [--symbols 1000000]
        [--step 2048] [--repeat 3] [--json OUT]

Symbols are drawn from zero-mean Gaussians whose scales are spread over stcm's scale table
(``small`` config), rounded to integers. "whole stream" codes them in one call; "per step"
in calls of --step symbols, as the wavefront decoder does once per anti-diagonal (the
encoder may batch, the decoder may not). CompressAI's coder gets its own quantized CDF
tables built from the same scale table (``GaussianConditional.update_scale_table``).
"index runs" is a candidate stream layout, not stcm's format: each step's symbols sorted by
scale index (stable) and each run of one index coded with that index's own categorical
model (constriction's ``Categorical`` over the same quantized Gaussian's alphabet), so the
coder looks a table up instead of evaluating a Gaussian per symbol; it costs one coder call
per distinct index in a step. Reported: seconds per million symbols and bits per symbol,
medians of --repeat.
"""
from __future__ import annotations

import argparse
import json
import platform

import constriction
import numpy as np
import torch

from common import median_time
from compressai_env import import_compressai
from stcm.config import get_config
from stcm.runtime.ans import GaussianDecoder, GaussianEncoder, pinned_scale_table

BOUND = 4096  # stcm's alphabet half-width (GaussianEncoder's default)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000_000)
    parser.add_argument("--step", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    import_compressai()
    from compressai.ans import RansDecoder, RansEncoder
    from compressai.entropy_models import GaussianConditional

    cfg = get_config("small")
    table = pinned_scale_table(cfg.scale_min, cfg.scale_max, cfg.scale_levels)
    rng = np.random.default_rng(0)
    # scales of a coded latent: mostly small, a tail of large ones
    indexes = np.clip(rng.normal(18, 10, args.symbols), 0, len(table) - 1).astype(np.int32)
    symbols = np.rint(rng.normal(0, table[indexes])).astype(np.int32)
    n = args.symbols
    chunks = [slice(i, min(i + args.step, n)) for i in range(0, n, args.step)]

    def ours_encode(steps):
        enc = GaussianEncoder(table)
        for sl in steps:
            enc.push(symbols[sl], indexes[sl].astype(np.uint8))
        return enc.finish()

    def ours_decode(data, steps):
        dec = GaussianDecoder(data, table)
        out = [dec.pop(indexes[sl].astype(np.uint8)) for sl in steps]
        dec.finish()
        return np.concatenate(out)

    # The candidate layout's models. Its probabilities come from torch's float64 ndtr here; a
    # stream format would ship the tables as data, since libm's last bits vary by platform.
    x = torch.arange(-BOUND, BOUND + 1, dtype=torch.float64)
    runs_models = {}
    for i in np.unique(indexes):
        s = float(table[i])
        p = torch.special.ndtr((x + 0.5) / s) - torch.special.ndtr((x - 0.5) / s)
        runs_models[int(i)] = constriction.stream.model.Categorical(p.numpy(), perfect=False)
    if np.abs(symbols).max() >= BOUND:
        raise SystemExit("a symbol reached the escape bound; the index-runs coder has no escapes")

    def runs(sl):
        """(order, [(index, start, stop)]) of one step's symbols sorted by index."""
        order = np.argsort(indexes[sl], kind="stable")
        sorted_idx = indexes[sl][order]
        starts = np.flatnonzero(np.diff(sorted_idx, prepend=-1))
        stops = np.append(starts[1:], sorted_idx.size)
        return order, list(zip(sorted_idx[starts].tolist(), starts.tolist(), stops.tolist()))

    def runs_encode(steps):
        coder = constriction.stream.stack.AnsCoder()
        for sl in reversed(steps):
            order, step_runs = runs(sl)
            step = symbols[sl][order] + BOUND
            for i, a, b in reversed(step_runs):
                coder.encode_reverse(step[a:b], runs_models[i])
        return coder.get_compressed()

    def runs_decode(data, steps):
        coder = constriction.stream.stack.AnsCoder(data)
        out = []
        for sl in steps:
            order, step_runs = runs(sl)
            step = np.empty(order.size, np.int32)
            for i, a, b in step_runs:
                step[order[a:b]] = coder.decode(runs_models[i], b - a)
            out.append(step - BOUND)
        return np.concatenate(out)

    gc = GaussianConditional(None)
    gc.update_scale_table(torch.tensor(table, dtype=torch.float32), force=True)
    cdfs = gc.quantized_cdf.tolist()
    lengths = gc.cdf_length.reshape(-1).int().tolist()
    offsets = gc.offset.reshape(-1).int().tolist()

    def peer_encode(steps):
        # CompressAI's encoder codes one list per call; the wavefront encoder could batch too,
        # so the per-step variant matters for decoding only; encode once as a whole.
        return RansEncoder().encode_with_indexes(symbols.tolist(), indexes.tolist(), cdfs,
                                                 lengths, offsets)

    def peer_decode(data, steps):
        if len(steps) == 1:
            return np.array(RansDecoder().decode_with_indexes(
                data, indexes.tolist(), cdfs, lengths, offsets), np.int32)
        dec = RansDecoder()
        dec.set_stream(data)
        return np.concatenate([np.array(dec.decode_stream(indexes[sl].tolist(), cdfs, lengths,
                                                          offsets), np.int32) for sl in steps])

    results = {}
    for name, enc, dec in (("stcm (constriction)", ours_encode, ours_decode),
                           ("CompressAI rANS", peer_encode, peer_decode),
                           ("index runs (candidate)", runs_encode, runs_decode)):
        for mode, steps in (("whole stream", [slice(0, n)]), ("per step", chunks)):
            t_enc, data = median_time(lambda: enc(steps), args.repeat)
            t_dec, decoded = median_time(lambda: dec(data, steps), args.repeat)
            data = data.tobytes() if isinstance(data, np.ndarray) else data
            assert np.array_equal(decoded, symbols), f"{name} {mode}: round trip failed"
            results[f"{name}, {mode}"] = {"encode_s_per_msym": t_enc / n * 1e6,
                                          "decode_s_per_msym": t_dec / n * 1e6,
                                          "bits_per_symbol": 8 * len(data) / n}
    print(f"{platform.machine()}; {n:,} symbols, steps of {args.step}, medians of "
          f"{args.repeat}")
    for name, r in results.items():
        print(f"{name:<36} encode {r['encode_s_per_msym']:6.3f} s/Msym  decode "
              f"{r['decode_s_per_msym']:6.3f} s/Msym  {r['bits_per_symbol']:.4f} bits/symbol")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": platform.machine(), "symbols": n, "step": args.step,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
