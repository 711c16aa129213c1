"""``stcm bench``: where encode and decode time goes, against the machine's compute floor.

    report = run_bench(codec, sizes=[512, 1024], repeat=5)
    print(format_report(report))

Each size is timed end to end (``Codec.compress`` / ``decompress``) after a warm-up run,
with a ``profile.Recorder`` attached, and every run's spans are split into the stages of the
pipeline (``CATEGORIES``): per stage the median over the repeats. The compute floor of a
stage is its multiply-accumulates, counted by hooks on every convolution while the stage
really runs (``count_macs``), over the machine's measured fp32 matrix-multiply rate
(``gemm_rate``).
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stcm.manifest import INT8_SYNTHESIS
from stcm.runtime.profile import Recorder, Span

# Report rows, in pipeline order. "steps: scheduling" is the time inside the decode steps
# spent neither in the step networks nor in ANS (cache updates, slicing, Python).
CATEGORIES = ("analysis", "hyper analysis", "z coding", "hyper synthesis", "side (per group)",
              "steps: network", "steps: ANS", "steps: scheduling", "synthesis", "container",
              "other")
_STAGE_CATEGORY = {"analysis": "analysis", "hyper_analysis": "hyper analysis",
                   "hyper_synthesis": "hyper synthesis", "synthesis": "synthesis",
                   INT8_SYNTHESIS: "synthesis"}


def stage_category(stage: str) -> str:
    if stage in _STAGE_CATEGORY:
        return _STAGE_CATEGORY[stage]
    if stage.startswith(("temporal_", "side_")):
        return "side (per group)"
    if stage.startswith(("step_", "recompute_")):
        return "steps: network"
    return "other"


def breakdown(spans: list[Span]) -> dict[str, float]:
    """Seconds per category of one run's spans (the run's root span is its total).

    Step networks and ANS passes only ever run inside a decode step's span, so the steps'
    remaining time is scheduling."""
    out = dict.fromkeys(CATEGORIES, 0.0)
    total = steps = 0.0
    for s in spans:
        sec = s.dur_ns / 1e9
        if s.cat in ("encode", "decode"):
            total += sec
        elif s.cat == "step":
            steps += sec
        elif s.cat == "stage":
            out[stage_category(s.name)] += sec
        elif s.cat == "ans":
            out["z coding" if s.name.startswith("z ") else "steps: ANS"] += sec
        elif s.cat == "container":
            out["container"] += sec
    out["steps: scheduling"] = max(0.0, steps - out["steps: network"] - out["steps: ANS"])
    out["other"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    return out


# -- compute floor -------------------------------------------------------------------------
def _conv_macs(module, inputs, output) -> int:
    weight = module.weight
    if isinstance(module, torch.nn.ConvTranspose2d):
        return inputs[0].numel() * weight[0].numel()  # each input meets Cout x kh x kw weights
    return output.numel() * weight[0].numel()  # each output: Cin x taps (or a matrix row)


def count_macs(cfg, height: int, width: int, tile_size: int = 64, tile_batch: int = 1
               ) -> dict[str, int]:
    """Multiply-accumulates per stage category of coding one (3, height, width) image with a
    model of architecture ``cfg``, counted by forward hooks on every convolution while the
    stages run (so it includes what the static-shaped wavefront step computes on positions
    outside the current anti-diagonal): the encode's stages, and synthesis from the decode.
    Weights do not matter: a random model is used."""
    from stcm.models.codec import STCM
    from stcm.runtime.codec import Codec

    torch.manual_seed(0)
    codec = Codec(STCM(cfg).eval(), tile_size=tile_size,
                  tile_batch=tile_batch if cfg.exact else 1)
    counts: dict[str, int] = {}
    current = ["other"]  # the category of the stage running now (stages share modules)

    def hook(module, inputs, output):
        counts[current[0]] = counts.get(current[0], 0) + _conv_macs(module, inputs, output)

    convs = {id(sub): sub for module in codec.backend.modules.values()
             for sub in module.modules()
             if isinstance(getattr(sub, "weight", None), torch.Tensor) and sub.weight.dim() >= 2}
    handles = [sub.register_forward_hook(hook) for sub in convs.values()]
    run = codec.backend._run

    def tagged(stage, inputs):
        current[0] = stage_category(stage)
        return run(stage, inputs)

    codec.backend._run = tagged
    try:
        image = np.random.default_rng(0).integers(0, 256, (3, height, width), dtype=np.uint8)
        data = codec.compress(image, 0.5)
        encode = dict(counts)
        counts.clear()
        codec.decompress(data)
        encode["synthesis"] = counts.get("synthesis", 0)
    finally:
        for h in handles:
            h.remove()
    return encode


def gemm_rate(n: int = 1024, repeat: int = 5) -> float:
    """The machine's measured fp32 matrix-multiply rate in FLOP/s (torch, current threads)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.matmul(a, b)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        torch.matmul(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times)


# -- the benchmark ----------------------------------------------------------------------
@dataclass
class SizeResult:
    size: int
    pixels: int
    bpp: float
    steps: int  # sequential decode steps
    encode_s: list[float]
    decode_s: list[float]
    encode: dict[str, float]  # category -> median seconds
    decode: dict[str, float]
    macs: dict[str, int] = field(default_factory=dict)

    def percentiles(self, which: str) -> dict[str, float]:
        times = np.array(self.encode_s if which == "encode" else self.decode_s)
        return {f"p{p}": float(np.percentile(times, p)) for p in (50, 90, 99)}


@dataclass
class BenchReport:
    backend: str
    model: str
    threads: int
    tile_size: int
    tile_batch: int
    gemm_flops: float
    results: list[SizeResult]

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def bundled_image(size: int) -> np.ndarray:
    """The bundled aerial RGB sample, mirrored out to (3, size, size)."""
    from stcm import SAMPLES_DIR
    from stcm.runtime.imageio import read_raster

    return fit_image(read_raster(SAMPLES_DIR / "neon_osbs_rgb8.tif").pixels, size)


def fit_image(pixels: np.ndarray, size: int) -> np.ndarray:
    """(bands, H, W) -> (bands, size, size): mirrored tiling, then a crop."""
    reps = -(-size // min(pixels.shape[1:]))
    mirrored = np.concatenate([pixels, pixels[:, ::-1]], axis=1)
    mirrored = np.concatenate([mirrored, mirrored[:, :, ::-1]], axis=2)
    tiled = np.tile(mirrored, (1, reps, reps))
    return np.ascontiguousarray(tiled[:, :size, :size])


def preset_model(name: str):
    """A model preset with seeded random weights: timing, not compression."""
    from stcm.config import PRESETS
    from stcm.models.codec import STCM

    torch.manual_seed(0)
    return STCM(PRESETS[name]).eval()


def run_bench(codec, sizes: list[int], repeat: int = 5, quality: float = 0.75,
              image: np.ndarray | None = None, trace: dict | None = None,
              progress=None) -> BenchReport:
    """Times ``codec`` on square images of each size (the bundled sample, or ``image``
    fitted to the size). ``trace``, if given, receives the Chrome trace of one encode and
    one decode of the first size."""
    gpu = "cuda" in codec.backend.device_numerics  # the stages run there, whatever the arrays
    recorder = Recorder(sync=torch.cuda.synchronize if gpu else None)
    previous = codec.recorder
    rate = gemm_rate()
    results = []
    try:
        for size in sizes:
            img = fit_image(image, size) if image is not None else bundled_image(size)
            data = codec.compress(img, quality)  # warm-up (sessions, caches)
            codec.decompress(data)
            codec.recorder = recorder
            runs = {"encode": [], "decode": []}
            for i in range(repeat):
                recorder.clear()
                data = codec.compress(img, quality)
                runs["encode"].append(breakdown(recorder.spans))
                if trace is not None and i == 0 and size == sizes[0]:
                    trace["encode"] = recorder.chrome_trace(process_name="encode")
                recorder.clear()
                codec.decompress(data)
                runs["decode"].append(breakdown(recorder.spans))
                if trace is not None and i == 0 and size == sizes[0]:
                    trace["decode"] = recorder.chrome_trace(pid=2, process_name="decode")
                if progress:
                    progress()
            codec.recorder = previous
            steps = codec.sequential_steps(img.shape[0], size, size)
            median = {w: {k: statistics.median(r[k] for r in runs[w]) for k in runs[w][0]}
                      for w in runs}
            results.append(SizeResult(
                size, size * size, 8 * len(data) / (size * size), steps,
                [r["total"] for r in runs["encode"]], [r["total"] for r in runs["decode"]],
                median["encode"], median["decode"],
                count_macs(codec.cfg, size, size, codec.tile_size,
                           codec.scheduler.batch())))
    finally:
        codec.recorder = previous
    return BenchReport(codec.backend.name, codec.cfg.name, torch.get_num_threads(),
                       codec.tile_size, codec.scheduler.batch(), rate, results)


def merge_traces(trace: dict) -> dict:
    """One Trace Event Format document holding the encode and the decode trace."""
    events = []
    for part in ("encode", "decode"):
        events += trace.get(part, {}).get("traceEvents", [])
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def format_report(report: BenchReport) -> str:
    lines = [f"stcm bench: model {report.model}, backend {report.backend}, "
             f"{report.threads} threads, tiles of {report.tile_size} latent positions, "
             f"{report.tile_batch} per step call; fp32 GEMM {report.gemm_flops / 1e9:.0f} "
             "GFLOP/s measured"]
    for r in report.results:
        mp = r.pixels / 1e6
        lines.append("")
        lines.append(f"{r.size}x{r.size} ({mp:.2f} MP), {r.bpp:.3f} bpp, {r.steps} sequential "
                     f"decode steps, medians of {len(r.decode_s)}")
        lines.append(f"  {'stage':<20}{'encode ms':>11}{'share':>7}{'decode ms':>11}{'share':>7}"
                     f"{'GMAC':>8}{'floor ms':>10}{'x floor':>9}")
        for cat in CATEGORIES:
            enc, dec = r.encode.get(cat, 0.0), r.decode.get(cat, 0.0)
            macs = r.macs.get(cat, 0)
            floor = 2 * macs / report.gemm_flops
            slowest = max(enc, dec) if cat != "analysis" and cat != "hyper analysis" else enc
            ratio = f"{slowest / floor:8.1f}x" if floor > 0 else f"{'':>9}"
            lines.append(f"  {cat:<20}{1e3 * enc:11.1f}{_share(enc, r.encode):>7}"
                         f"{1e3 * dec:11.1f}{_share(dec, r.decode):>7}"
                         f"{macs / 1e9:8.2f}{1e3 * floor:10.1f}{ratio}")
        te, td = r.encode["total"], r.decode["total"]
        lines.append(f"  {'total':<20}{1e3 * te:11.1f}{'':>7}{1e3 * td:11.1f}")
        pe, pd = r.percentiles("encode"), r.percentiles("decode")
        lines.append(f"  encode {mp / te:.3f} MP/s ({te / mp:.2f} s/MP), latency p50/p90/p99 "
                     f"{_ms(pe)};  decode {mp / td:.3f} MP/s ({td / mp:.2f} s/MP), "
                     f"p50/p90/p99 {_ms(pd)}")
    if len(report.results) > 1:
        lines.append("")
        lines.append("scaling (time should grow linearly with pixels):")
        px = np.log([r.pixels for r in report.results])
        for which in ("encode", "decode"):
            t = np.log([r.encode["total"] if which == "encode" else r.decode["total"]
                        for r in report.results])
            slope = float(np.polyfit(px, t, 1)[0])
            runs = [(r.size, (r.encode if which == "encode" else r.decode)["total"],
                     r.pixels / 1e6) for r in report.results]
            per_mp = ", ".join(f"{size}: {total / mp:.2f}" for size, total, mp in runs)
            lines.append(f"  {which}: s/MP by size {per_mp}; time ~ pixels^{slope:.2f}")
        lines.append("  sequential steps by size: "
                     + ", ".join(f"{r.size}: {r.steps}" for r in report.results))
    return "\n".join(lines)


def _share(value: float, run: dict) -> str:
    total = run.get("total", 0.0)
    return f"{100 * value / total:5.1f}%" if total > 0 else ""


def _ms(p: dict) -> str:
    return "/".join(f"{1e3 * v:.0f}" for v in p.values()) + " ms"
