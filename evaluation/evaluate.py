"""``stcm eval``: rate-distortion of stcm against classical codecs, measured on real bytes.

    codecs = [StcmCodec(Codec(), qualities=(0, 0.5, 1)), *get_codecs()]
    result = evaluate(image_paths, codecs, crop=512)
    write_results(result, "eval_results")      # results.csv, results.json, rd_psnr.png
    print(result.summary())

Every image is coded and decoded by every codec at every setting of its sweep. The rate is
the size of what the encoder wrote (8 * bytes / (H * W): bits per pixel, all bands together);
PSNR and MS-SSIM compare the decoded samples to the original in the dtype's full range (255
for uint8, 65535 for uint16). BD-rates use PSNR, Akima interpolation (the ``bjontegaard``
package) and JPEG 2000 as the anchor. See docs/evaluation.md.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from stcm.atomic import atomic_path
from stcm.errors import ConfigError, DataError, OutputExistsError, StcmError
from stcm.evaluation.classical import (YES, ClassicalCodec, HevcIntra, Support, ffmpeg_version,
                                    ffmpeg_x265)
from stcm.runtime.codec import Codec
from stcm.runtime.imageio import read_raster

ANCHOR = "jpeg2000"
DEFAULT_QUALITIES = (0.0, 0.25, 0.5, 0.75, 1.0)
OUTPUTS = ("results.csv", "results.json", "rd_psnr.png")
CSV_COLUMNS = ("image", "codec", "setting", "bpp", "psnr", "ms_ssim", "encode_s", "decode_s",
               "bytes")
# pytorch-msssim downsamples 4 times with an 11-tap window: each side must exceed 160 pixels.
MS_SSIM_MIN_SIDE = 161
# Akima needs 3 points to be more than a straight line; classic BD-rate used 4.
MIN_BD_POINTS = 3
# Below this share of common PSNR range a BD-rate gets a note (bjontegaard's default).
MIN_OVERLAP = 0.75
# import name -> pip name of the ``eval`` extra
EVAL_EXTRA = {"imagecodecs": "imagecodecs", "pytorch_msssim": "pytorch-msssim",
              "bjontegaard": "bjontegaard", "matplotlib": "matplotlib"}


def require_dependencies() -> None:
    """Raises ConfigError naming the ``eval`` extra when one of its packages is missing."""
    missing = [pip for module, pip in EVAL_EXTRA.items()
               if importlib.util.find_spec(module) is None]
    if missing:
        raise ConfigError(f"stcm eval needs {', '.join(missing)}: pip install 'stcm[eval]'")


class StcmCodec:
    """stcm behind the classical codecs' interface: the sweep is a list of qualities."""

    name, label, parameter = "stcm", "stcm", "quality in [0, 1] (0 = smallest file)"
    failures = (StcmError,)  # anything else is a bug and should surface

    def __init__(self, codec: Codec, qualities: Sequence[float] = DEFAULT_QUALITIES):
        self.codec = codec
        self.sweep = tuple(float(q) for q in qualities)
        self.label = f"stcm ({codec.cfg.name})"

    def supports(self, image: np.ndarray) -> Support:
        return YES  # any band count and dtype; a refusal raises a StcmError, noted per image

    def encode(self, image: np.ndarray, setting: float) -> bytes:
        return self.codec.compress(image, setting)

    def decode(self, data: bytes) -> np.ndarray:
        return self.codec.decompress(data)


# -- metrics -----------------------------------------------------------------------------------

def peak_value(image: np.ndarray) -> float:
    """The PSNR peak: the dtype's full range for integers (255, 65535), else the image's range.

    Example:
        >>> import numpy as np
        >>> peak_value(np.zeros((1, 2, 2), np.uint8)), peak_value(np.zeros((1, 2, 2), np.uint16))
        (255.0, 65535.0)
    """
    if image.dtype.kind in "ui":
        info = np.iinfo(image.dtype)
        return float(info.max) - float(info.min)
    return max(float(image.max()) - float(image.min()), float(np.finfo(np.float32).eps))


def mse(reference: np.ndarray, decoded: np.ndarray) -> float:
    if decoded.shape != reference.shape:
        raise DataError(f"decoded shape {decoded.shape} differs from {reference.shape}")
    diff = reference.astype(np.float64) - decoded.astype(np.float64)
    return float(np.mean(diff * diff))


def psnr(error: float, peak: float) -> float:
    """PSNR in dB from a mean squared error; inf for an exact decode."""
    return math.inf if error == 0 else 10 * math.log10(peak * peak / error)


def ms_ssim(reference: np.ndarray, decoded: np.ndarray, peak: float) -> float:
    """MS-SSIM over all bands (pytorch-msssim); NaN when a side is under 161 pixels."""
    if min(reference.shape[1:]) < MS_SSIM_MIN_SIDE:
        return math.nan
    import torch
    from pytorch_msssim import ms_ssim as _ms_ssim

    # float64 scaled to [0, 1]: float32 variances of 16-bit values lose digits.
    x = torch.from_numpy(reference.astype(np.float64) / peak)[None]
    y = torch.from_numpy(decoded.astype(np.float64) / peak)[None]
    # One thread: these thin convolutions gain little from more, and on a busy 2-core
    # machine OpenMP's spin-waiting made two threads 10-30x slower than one (measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return float(_ms_ssim(x, y, data_range=1.0))
    finally:
        torch.set_num_threads(threads)


# -- results -----------------------------------------------------------------------------------

@dataclass
class Measurement:
    """One image coded by one codec at one setting."""

    image: str
    codec: str
    setting: float
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    bytes: int
    mse: float


@dataclass
class ImageInfo:
    name: str
    path: str
    bands: int
    height: int
    width: int
    dtype: str
    peak: float
    cropped_from: tuple[int, int] | None = None


@dataclass
class Note:
    """Why something was not measured (an image skipped by a codec, a BD-rate left NaN)."""

    codec: str
    image: str | None
    text: str


@dataclass
class CurvePoint:
    """One setting averaged over images: mean bpp, mean PSNR, mean MS-SSIM."""

    setting: float
    bpp: float
    psnr: float
    ms_ssim: float
    images: int


@dataclass
class BdRate:
    """BD-rate (%) against the anchor: on the averaged curves of each sample type (``per_group``,
    e.g. ``uint8``, ``uint16``) and per image. ``average`` is the one group's value when all the
    images share a sample type, else NaN: PSNRs on the 255 and 65535 scales do not average.
    NaN elsewhere: see the notes."""

    average: float
    per_image: dict[str, float] = field(default_factory=dict)
    images: int = 0  # images both codecs coded, the average's population
    per_group: dict[str, float] = field(default_factory=dict)


@dataclass
class CodecInfo:
    name: str
    label: str
    parameter: str
    sweep: tuple


@dataclass
class EvalResult:
    images: list[ImageInfo]
    codecs: list[CodecInfo]
    rows: list[Measurement]
    notes: list[Note]
    anchor: str
    bd_rate: dict[str, BdRate]
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def anchor_label(self) -> str:
        return next((c.label for c in self.codecs if c.name == self.anchor), self.anchor)

    def groups(self, images: Sequence[str] | None = None) -> dict[str, list[str]]:
        """``images`` (default: all) by sample type, in evaluation order: the images whose PSNRs
        share one scale and so may be averaged."""
        wanted = None if images is None else set(images)
        groups: dict[str, list[str]] = {}
        for info in self.images:
            if wanted is None or info.name in wanted:
                groups.setdefault(info.dtype, []).append(info.name)
        return groups

    def coded_images(self, codec: str, among: Sequence[str] | None = None) -> list[str]:
        """Images (of ``among``, default all) with at least one measurement by ``codec``, in
        evaluation order."""
        done = {r.image for r in self.rows if r.codec == codec}
        return [i.name for i in self.images
                if i.name in done and (among is None or i.name in among)]

    def curve(self, codec: str, images: Sequence[str]) -> list[CurvePoint]:
        """The averaged RD curve of ``codec`` over ``images`` (of one sample type, see
        ``groups``).

        A setting enters only when every one of those images has it, so that every point
        averages the same images; a lossless point (inf PSNR) averages to inf.
        """
        images = list(images)
        by_setting: dict[float, list[Measurement]] = {}
        for r in self.rows:
            if r.codec == codec and r.image in images:
                by_setting.setdefault(r.setting, []).append(r)
        points = []
        for setting, rows in by_setting.items():
            if images and len(rows) == len(images):
                ssim = [r.ms_ssim for r in rows if not math.isnan(r.ms_ssim)]
                points.append(CurvePoint(setting, float(np.mean([r.bpp for r in rows])),
                                         float(np.mean([r.psnr for r in rows])),
                                         float(np.mean(ssim)) if ssim else math.nan, len(rows)))
        return sorted(points, key=lambda p: p.bpp)

    def decode_seconds_per_mp(self, codec: str, images: Sequence[str] | None = None) -> float:
        """Median decode time per megapixel of ``codec`` over its measurements (of ``images``,
        default all)."""
        pixels = {i.name: i.height * i.width for i in self.images}
        times = [r.decode_s / (pixels[r.image] / 1e6) for r in self.rows
                 if r.codec == codec and (images is None or r.image in images)]
        return float(np.median(times)) if times else math.nan

    def summary(self) -> str:
        """A readable table: codec, images, mean bpp and PSNR ranges, BD-rate, median decode
        time per megapixel, then notes."""
        lines = [f"{len(self.images)} image(s); BD-rate (PSNR, Akima) against "
                 f"{self.anchor_label} on the averaged curves of each sample type, negative = "
                 "fewer bits for the same PSNR"]
        for group, names in self.groups().items():
            lines += [f"{group} ({len(names)} image(s), PSNR peak "
                      f"{_peak_text(self.images, names)}):",
                      f"  {'codec':<20} {'images':>6}  {'mean bpp':>15}  {'mean PSNR dB':>15}  "
                      f"{'BD-rate':>9}  {'decode s/MP':>11}"]
            for info in self.codecs:
                coded = self.coded_images(info.name, names)
                if not coded:
                    continue
                points = [p for p in self.curve(info.name, coded) if math.isfinite(p.psnr)]
                if not points:
                    lines.append(f"  {info.label:<20} {len(coded):>6}  not measured (see notes)")
                    continue
                bd = self.bd_rate.get(info.name)
                value = math.nan if bd is None else bd.per_group.get(group, math.nan)
                bd_text = "n/a" if math.isnan(value) else f"{value:+.1f} %"
                lines.append(f"  {info.label:<20} {len(coded):>6}  "
                             f"{_span([p.bpp for p in points], '.3f'):>15}  "
                             f"{_span([p.psnr for p in points], '.2f'):>15}  {bd_text:>9}  "
                             f"{self.decode_seconds_per_mp(info.name, coded):>11.3f}")
        grouped: dict[tuple[str, str], list[str]] = {}
        for note in self.notes:
            grouped.setdefault((note.codec, note.text), []).append(note.image or "")
        if grouped:
            lines.append("notes:")
        for (codec, text), images in grouped.items():
            named = [i for i in images if i]
            where = ""
            if named:
                shown = ", ".join(named[:3]) + (f" +{len(named) - 3} more" if len(named) > 3
                                                else "")
                where = f" [{shown}]"
            lines.append(f"  {codec}: {text}{where}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Everything, as strict JSON values (NaN and inf become null; ``mse`` 0 = exact)."""
        return _finite({
            "anchor": self.anchor,
            "method": {"rate": "8 * encoded bytes / (height * width)",
                       "psnr_peak": "dtype full range (255 uint8, 65535 uint16)",
                       "bd_rate": "bjontegaard.bd_rate, PSNR, akima"},
            "versions": self.versions,
            "images": [asdict(i) for i in self.images],
            "codecs": [asdict(c) for c in self.codecs],
            "rows": [asdict(r) for r in self.rows],
            "curves": {group: {c.name: [asdict(p) for p in self.curve(c.name, coded)]
                               for c in self.codecs
                               if (coded := self.coded_images(c.name, names))}
                       for group, names in self.groups().items()},
            "bd_rate": {k: asdict(v) for k, v in self.bd_rate.items()},
            "decode_s_per_mp": {c.name: self.decode_seconds_per_mp(c.name) for c in self.codecs},
            "notes": [asdict(n) for n in self.notes],
        })


def _peak_text(images: Sequence[ImageInfo], names: Sequence[str]) -> str:
    peaks = sorted({i.peak for i in images if i.name in names})
    return ", ".join(f"{p:g}" for p in peaks)


def _span(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}..{max(values):{fmt}}"


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- BD-rate -----------------------------------------------------------------------------------

def _bd_curve(points: Sequence[tuple[float, float]]
              ) -> tuple[np.ndarray | None, np.ndarray | None, str | None, int]:
    """Sorted finite (rate, PSNR) arrays of the curve's efficient points, or a reason why they
    cannot carry a BD-rate; and how many dominated points were left out."""
    finite = [(r, d) for r, d in points if math.isfinite(r) and r > 0 and math.isfinite(d)]
    # The interpolation runs rate as a function of PSNR, so both must rise strictly. A point
    # that costs as many bits as another for no more PSNR is one no user would pick (an encoder
    # saturating at its lowest or highest setting, say): keep the efficient front only.
    kept: list[tuple[float, float]] = []
    for r, d in sorted(finite, key=lambda p: (p[0], -p[1])):
        if not kept or d > kept[-1][1]:
            kept.append((r, d))
    dropped = len(finite) - len(kept)
    if len(kept) < MIN_BD_POINTS:
        left_out = f"; {dropped} dominated point(s) left out" if dropped else ""
        why = (f"{len(kept)} finite RD point(s), BD-rate needs {MIN_BD_POINTS} "
               f"(lossless points have no PSNR{left_out})")
        return None, None, why, dropped
    rate, dist = np.array(kept).T
    return rate, dist, None, dropped


def bd_rate(anchor: Sequence[tuple[float, float]],
            test: Sequence[tuple[float, float]]) -> tuple[float, str | None]:
    """BD-rate (%) of ``test`` against ``anchor``, curves as (bpp, PSNR) points.

    Returns NaN and the reason when a curve is too short, non-monotonic or the curves do not
    overlap in PSNR; a partial overlap gives a value and a warning note.

    Example:
        >>> curve = [(0.2, 28.0), (0.5, 31.0), (1.0, 34.0), (2.0, 37.5)]
        >>> bd_rate(curve, curve)
        (0.0, None)
        >>> half = [(rate / 2, psnr) for rate, psnr in curve]  # same PSNR at half the bits
        >>> round(bd_rate(curve, half)[0], 6)
        -50.0
    """
    import bjontegaard

    rate_a, dist_a, why, dropped_a = _bd_curve(anchor)
    if why:
        return math.nan, f"anchor: {why}"
    rate_t, dist_t, why, dropped_t = _bd_curve(test)
    if why:
        return math.nan, why
    notes = [f"{n} dominated RD point(s) of the {who} left out" for n, who in
             ((dropped_a, "anchor"), (dropped_t, "test curve")) if n]
    low, high = max(dist_a[0], dist_t[0]), min(dist_a[-1], dist_t[-1])
    if low >= high:
        return math.nan, (f"the PSNR ranges do not overlap ({dist_t[0]:.2f}..{dist_t[-1]:.2f} "
                          f"vs the anchor's {dist_a[0]:.2f}..{dist_a[-1]:.2f} dB)")
    # The BD-rate averages the rate ratio over the common PSNR interval only: say when that
    # interval is a small part of the curves (bjontegaard's own warning, reworded).
    overlap = (high - low) / (max(dist_a[-1], dist_t[-1]) - min(dist_a[0], dist_t[0]))
    if overlap < MIN_OVERLAP:
        notes.append(f"computed over {low:.2f}..{high:.2f} dB only, "
                     f"{math.floor(overlap * 100)}% of the union of the two curves' PSNR ranges")
    note = "; ".join(notes) or None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(bjontegaard.bd_rate(rate_a, dist_a, rate_t, dist_t, method="akima",
                                              require_matching_points=False, min_overlap=0))
        except (ValueError, AssertionError) as exc:
            return math.nan, f"BD-rate failed: {exc}"
    if not math.isfinite(value):
        return math.nan, "BD-rate is not finite"
    return value, note


def _bd_rates(result: EvalResult) -> None:
    anchor = result.anchor
    anchor_images = set(result.coded_images(anchor))
    for info in result.codecs:
        if not anchor_images:
            result.notes.append(Note(anchor, None, "no BD-rate: the anchor coded no image"))
            break
        common = [i for i in result.coded_images(info.name) if i in anchor_images]
        entry = BdRate(math.nan, images=len(common))
        for image in common:
            value, note = bd_rate(_points(result.curve(anchor, [image])),
                                  _points(result.curve(info.name, [image])))
            entry.per_image[image] = value
            if note and math.isnan(value):
                result.notes.append(Note(info.name, image, f"BD-rate NaN: {note}"))
        groups = result.groups(common)
        for group, names in groups.items():
            value, note = bd_rate(_points(result.curve(anchor, names)),
                                  _points(result.curve(info.name, names)))
            entry.per_group[group] = value
            if note and info.name != anchor:
                result.notes.append(Note(info.name, None, f"averaged BD-rate ({group}): {note}"))
        if len(groups) == 1:
            entry.average = next(iter(entry.per_group.values()))
        result.bd_rate[info.name] = entry


def _points(curve: list[CurvePoint]) -> list[tuple[float, float]]:
    return [(p.bpp, p.psnr) for p in curve]


# -- the evaluation ----------------------------------------------------------------------------

def _names(paths: Sequence[Path]) -> list[str]:
    """Image names relative to the folder all paths share (unique across folders)."""
    if len(paths) == 1:
        return [paths[0].name]
    root = Path(os.path.commonpath([p.resolve() for p in paths]))
    return [str(p.resolve().relative_to(root)) for p in paths]


def centre_crop(image: np.ndarray, size: int | None) -> np.ndarray:
    """The central ``size`` x ``size`` window (each side capped at the image's)."""
    if size is None:
        return image
    height, width = image.shape[1:]
    top, left = max((height - size) // 2, 0), max((width - size) // 2, 0)
    return np.ascontiguousarray(image[:, top:top + size, left:left + size])


def _measure(codec, image: np.ndarray, name: str, setting: float, peak: float) -> Measurement:
    start = time.perf_counter()
    data = codec.encode(image, setting)
    middle = time.perf_counter()
    decoded = codec.decode(data)
    end = time.perf_counter()
    error = mse(image, decoded)
    return Measurement(image=name, codec=codec.name, setting=setting,
                       bpp=8 * len(data) / (image.shape[1] * image.shape[2]),
                       psnr=psnr(error, peak), ms_ssim=ms_ssim(image, decoded, peak),
                       encode_s=middle - start, decode_s=end - middle, bytes=len(data), mse=error)


def evaluate(paths: Sequence[str | os.PathLike], codecs: Sequence[ClassicalCodec | StcmCodec],
             *, crop: int | None = None, anchor: str = ANCHOR,
             progress: bool | None = None) -> EvalResult:
    """Codes every image with every codec at every setting of its sweep; see the module doc.

    Args:
        paths: image files (``read_raster``); list folders with ``stcm.models.data.list_images``.
        codecs: ``StcmCodec`` and ``classical.get_codecs()`` instances.
        crop: evaluate the central crop x crop window of larger images.
        anchor: the codec BD-rates are measured against.
        progress: a tqdm bar on stderr (None: only on a terminal).

    Raises:
        DataError: No path, or no image could be read.
        ConfigError: Two codecs share a name, or ``crop`` is not positive.
    """
    require_dependencies()
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no image to evaluate")
    names = [c.name for c in codecs]
    if len(set(names)) != len(names):
        raise ConfigError(f"codec names must be unique, got {names}")
    if crop is not None and crop < 1:
        raise ConfigError(f"crop must be a positive number of pixels, got {crop}")
    result = EvalResult(images=[], codecs=[CodecInfo(c.name, c.label, c.parameter, c.sweep)
                                           for c in codecs],
                        rows=[], notes=[], anchor=anchor, bd_rate={})
    total = len(paths) * sum(len(c.sweep) for c in codecs)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, desc="eval", unit="code", file=sys.stderr, disable=not show) as bar:
        for path, name in zip(paths, _names(paths)):
            try:
                pixels = read_raster(path).pixels
            except StcmError as exc:
                result.notes.append(Note("all", name, f"not read: {exc}"))
                bar.update(sum(len(c.sweep) for c in codecs))
                continue
            image = centre_crop(pixels, crop)
            peak = peak_value(image)
            result.images.append(ImageInfo(
                name, str(path), image.shape[0], image.shape[1], image.shape[2],
                str(image.dtype), peak, pixels.shape[1:] if image.shape != pixels.shape else None))
            for codec in codecs:
                _run_codec(codec, image, name, peak, result, bar)
    if not result.images:
        raise DataError(f"none of the {len(paths)} image(s) could be read")
    _bd_rates(result)
    result.versions = _versions(codecs)
    return result


def _versions(codecs) -> dict[str, str]:
    """The software that produced the numbers: stcm, the codec libraries, ffmpeg."""
    import imagecodecs

    import stcm

    versions = {"stcm": stcm.__version__, "imagecodecs": imagecodecs.__version__}
    libraries = {"libjpeg_turbo", "libjxl", "libavif", "libwebp", "openjpeg"}
    for item in imagecodecs.version().split(","):
        name, _, version = item.strip().partition("-")
        if name in libraries:
            versions[name] = version
    if any(c.name == HevcIntra.name for c in codecs) and ffmpeg_x265():
        versions["ffmpeg"] = ffmpeg_version()
    return versions


def _run_codec(codec, image, name, peak, result: EvalResult, bar) -> None:
    bar.set_postfix_str(f"{name} {codec.name}", refresh=False)
    support = codec.supports(image)
    if not support:
        result.notes.append(Note(codec.name, name, f"skipped: {support.reason}"))
        bar.update(len(codec.sweep))
        return
    # Classical libraries raise their own error types; any failure skips that one setting.
    failures = getattr(codec, "failures", (Exception,))
    for setting in codec.sweep:
        try:
            result.rows.append(_measure(codec, image, name, setting, peak))
        except failures as exc:
            result.notes.append(Note(codec.name, name, f"setting {setting:g} failed: "
                                     f"{type(exc).__name__}: {exc}"))
        bar.update(1)


# -- output ------------------------------------------------------------------------------------

def check_outputs(out_dir: str | os.PathLike, force: bool = False) -> None:
    """Raises OutputExistsError when a result file exists in ``out_dir`` and not ``force``."""
    existing = [str(Path(out_dir) / n) for n in OUTPUTS if (Path(out_dir) / n).exists()]
    if existing and not force:
        raise OutputExistsError(f"{', '.join(existing)} exist(s); pass --force to overwrite")


def write_results(result: EvalResult, out_dir: str | os.PathLike, *,
                  force: bool = False) -> dict[str, Path]:
    """Writes results.csv, results.json and rd_psnr.png into ``out_dir``, each atomically.

    Raises:
        OutputExistsError: A result file exists and ``force`` is false (nothing is written).
    """
    check_outputs(out_dir, force)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in OUTPUTS}
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in result.rows:
        writer.writerow([getattr(row, c) for c in CSV_COLUMNS])
    with atomic_path(paths["results.csv"]) as tmp:
        tmp.write_text(table.getvalue())
    with atomic_path(paths["results.json"]) as tmp:
        tmp.write_text(json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")
    with atomic_path(paths["rd_psnr.png"]) as tmp:
        _plot(result, tmp)
    return paths


def _plot(result: EvalResult, path: Path) -> None:
    # A bare Figure with the Agg canvas: no pyplot, so no GUI backend and no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = result.groups()
    fig = Figure(figsize=(7 * len(groups), 5), dpi=120)
    FigureCanvasAgg(fig)
    # One panel per sample type: PSNRs on the 255 and 65535 scales share no axis.
    for index, (group, names) in enumerate(groups.items(), start=1):
        ax = fig.add_subplot(1, len(groups), index)
        for info in result.codecs:
            coded = result.coded_images(info.name, names)
            points = [p for p in result.curve(info.name, coded) if math.isfinite(p.psnr)]
            if not points:
                continue
            bd = result.bd_rate.get(info.name)
            value = math.nan if bd is None else bd.per_group.get(group, math.nan)
            label = info.label
            if not math.isnan(value) and info.name != result.anchor:
                label += f" ({value:+.1f} %)"
            ax.plot([p.bpp for p in points], [p.psnr for p in points], marker="o", markersize=3,
                    linewidth=2.5 if info.name == StcmCodec.name else 1.2, label=label)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel("PSNR (dB, dtype range)")
        ax.set_title(f"{group}: mean over {len(names)} image(s); BD-rate vs "
                     f"{result.anchor_label}")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
