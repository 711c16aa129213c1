"""Classical image codecs behind one small interface, for ``stcm eval`` (``evaluate.py``).

Every codec has a ``name``, a ``sweep`` of settings chosen to span roughly 0.1-4 bpp on 8-bit
RGB aerial imagery (the rates stcm's qualities cover), ``supports(image)``, ``encode(image,
setting) -> bytes`` (the complete output the library writes: its size is the rate) and
``decode(bytes) -> image``. Images are (bands, H, W) arrays as ``read_raster`` returns them.

JPEG 2000, JPEG XL, AVIF, WebP and JPEG come from ``imagecodecs`` (the ``eval`` extra);
HEVC intra runs ``ffmpeg`` with libx265 when it is on PATH. A codec that cannot code an
image says why through ``supports``; the evaluation then skips it for that image.
"""
from __future__ import annotations

import functools
import math
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stcm.errors import ConfigError

U8, U16 = np.dtype("uint8"), np.dtype("uint16")


@dataclass(frozen=True)
class Support:
    """Whether a codec can code an image; falsy with the reason when it cannot."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


YES = Support(True)


def _imagecodecs():
    import imagecodecs  # optional: the ``eval`` extra

    return imagecodecs


def _to_hwc(image: np.ndarray) -> np.ndarray:
    """(bands, H, W) -> (H, W, bands), or (H, W) for one band, C-contiguous for the codecs."""
    return np.ascontiguousarray(image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1))


def _from_hwc(array: np.ndarray) -> np.ndarray:
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


class ClassicalCodec:
    """The common interface; subclasses set the class attributes and ``_encode``."""

    name = ""            # the id used on the command line and in the results
    label = ""           # for the plot and the summary
    parameter = ""       # what a setting means
    sweep: tuple = ()    # settings, lowest rate first
    bands = (3,)         # band counts the codec codes
    dtypes = (U8,)       # sample types it codes
    feature = ""         # imagecodecs' availability flag (JPEG2K, AVIF, ...)
    _decoder = ""        # imagecodecs' decode function

    def supports(self, image: np.ndarray) -> Support:
        if self.feature and not self._available():
            return Support(False, f"{self.label} is not available in the installed "
                           "imagecodecs build")
        if image.shape[0] not in self.bands:
            return Support(False, f"{self.label} codes {' or '.join(map(str, self.bands))} "
                           f"band(s), the image has {image.shape[0]}")
        if image.dtype not in self.dtypes:
            return Support(False, f"{self.label} codes {'/'.join(map(str, self.dtypes))} "
                           f"samples, the image is {image.dtype}")
        return YES

    def _available(self) -> bool:
        return bool(getattr(_imagecodecs(), self.feature).available)

    def encode(self, image: np.ndarray, setting: float) -> bytes:
        return bytes(self._encode(_to_hwc(image), setting, image))

    def decode(self, data: bytes) -> np.ndarray:
        return _from_hwc(getattr(_imagecodecs(), self._decoder)(data))

    def _encode(self, hwc: np.ndarray, setting: float, image: np.ndarray) -> bytes:
        raise NotImplementedError


def _range_offset_db(image: np.ndarray) -> float:
    """How many dB a PSNR in the dtype's full range exceeds the PSNR in the image's own range."""
    peak = float(np.iinfo(image.dtype).max)
    spread = max(float(image.max()) - float(image.min()), 1.0)
    return 20 * math.log10(peak / spread)


class Jpeg2000(ClassicalCodec):
    name, label, feature, _decoder = "jpeg2000", "JPEG 2000", "JPEG2K", "jpeg2k_decode"
    # OpenJPEG's quality is a target PSNR in the dtype's range (65535 for 16 bits). The sweep
    # is in the image's own value range so that a 16-bit scene using 13 bits gets the same
    # rate range as an 8-bit one; encode adds the difference.
    parameter = "target PSNR (dB) relative to the image's own value range"
    # Up to 47 dB: stcm's best quality on low-contrast 16-bit scenes sits above 41 dB of their
    # own range.
    sweep = (22.0, 24.0, 26.0, 28.0, 30.0, 32.0, 34.0, 36.0, 38.0, 41.0, 44.0, 47.0)
    bands, dtypes = (1, 3), (U8, U16)

    def _encode(self, hwc, setting, image):
        # A bare codestream (.j2k): the JP2 boxes carry no pixels, like HEVC's raw stream.
        return _imagecodecs().jpeg2k_encode(hwc, level=setting + _range_offset_db(image),
                                            codecformat="J2K", reversible=False)


class JpegXl(ClassicalCodec):
    name, label, feature, _decoder = "jpegxl", "JPEG XL", "JPEGXL", "jpegxl_decode"
    parameter = "Butteraugli distance (lower = better)"
    sweep = (20.0, 12.0, 8.0, 5.0, 3.5, 2.5, 1.8, 1.2, 0.8, 0.5)
    bands, dtypes = (1, 3), (U8, U16)

    def _encode(self, hwc, setting, image):
        return _imagecodecs().jpegxl_encode(hwc, distance=setting, lossless=False)


class Avif(ClassicalCodec):
    name, label, feature, _decoder = "avif", "AVIF", "AVIF", "avif_decode"
    parameter = "quality 0-100 (libavif speed 6, YUV 4:4:4)"
    sweep = (2.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 88.0)
    # imagecodecs codes one-band AVIF losslessly whatever the quality: 3 bands only.
    dtypes = (U8, U16)

    def supports(self, image):
        support = super().supports(image)
        if support and image.dtype == U16 and int(image.max()) > 4095:
            return Support(False, f"AVIF codes at most 12 bits, the image's maximum is "
                           f"{int(image.max())}")
        return support

    def _encode(self, hwc, setting, image):
        bits = 12 if hwc.dtype == U16 else 8
        return _imagecodecs().avif_encode(hwc, level=int(setting), speed=6, pixelformat="444",
                                          bitspersample=bits)


class WebP(ClassicalCodec):
    name, label, feature, _decoder = "webp", "WebP", "WEBP", "webp_decode"
    parameter = "quality 0-100 (lossy, method 6)"
    sweep = (1.0, 10.0, 25.0, 40.0, 55.0, 70.0, 80.0, 90.0, 95.0)

    def _encode(self, hwc, setting, image):
        return _imagecodecs().webp_encode(hwc, level=int(setting), lossless=False, method=6)


class Jpeg(ClassicalCodec):
    name, label, feature, _decoder = "jpeg", "JPEG", "JPEG8", "jpeg8_decode"
    parameter = "quality 0-100 (libjpeg defaults: YCbCr 4:2:0, optimized Huffman tables)"
    sweep = (5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 75.0, 85.0, 92.0, 96.0)
    bands = (1, 3)

    def _encode(self, hwc, setting, image):
        return _imagecodecs().jpeg8_encode(hwc, level=int(setting), optimize=True)


# -- HEVC intra through ffmpeg ------------------------------------------------------------------

# BT.709 full-range YCbCr. Done here in float64 with rounding, not by ffmpeg's swscale, whose
# default RGB->YUV path is limited range (16-235) and costs several dB at high rates.
_KR, _KB = 0.2126, 0.0722
_KG = 1 - _KR - _KB
RGB_TO_YCBCR = np.array([[_KR, _KG, _KB],
                         [-_KR / (2 * (1 - _KB)), -_KG / (2 * (1 - _KB)), 0.5],
                         [0.5, -_KG / (2 * (1 - _KR)), -_KB / (2 * (1 - _KR))]])
YCBCR_TO_RGB = np.linalg.inv(RGB_TO_YCBCR)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])[:, None]


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 RGB -> (3, H, W) uint8 full-range BT.709 YCbCr, rounded to nearest.

    Example:
        >>> import numpy as np
        >>> rgb = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
        >>> back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
        >>> int(np.abs(back.astype(int) - rgb).max())  # 8-bit YCbCr: off by one at most
        1
    """
    flat = rgb.reshape(3, -1).astype(np.float64)
    ycc = RGB_TO_YCBCR @ flat + _CHROMA_OFFSET
    return np.clip(np.rint(ycc), 0, 255).astype(np.uint8).reshape(rgb.shape)


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """The inverse of ``rgb_to_ycbcr``: (3, H, W) uint8 YCbCr -> uint8 RGB, rounded."""
    flat = ycc.reshape(3, -1).astype(np.float64) - _CHROMA_OFFSET
    return np.clip(np.rint(YCBCR_TO_RGB @ flat), 0, 255).astype(np.uint8).reshape(ycc.shape)


@functools.lru_cache(maxsize=None)
def ffmpeg_x265() -> Support:
    """Whether ``ffmpeg`` is on PATH and has the libx265 encoder (cached)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        return Support(False, "ffmpeg is not on PATH (install Debian's ffmpeg for HEVC intra)")
    try:
        encoders = subprocess.run([ffmpeg, "-hide_banner", "-encoders"], capture_output=True,
                                  text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        return Support(False, f"ffmpeg does not run: {exc}")
    if "libx265" not in encoders:
        return Support(False, "this ffmpeg has no libx265 encoder")
    return YES


def ffmpeg_version() -> str:
    """The first line of ``ffmpeg -version``."""
    out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=60)
    return out.stdout.split("\n", 1)[0].strip()


def _ffmpeg(args: list[str], stdin: bytes | None = None) -> bytes:
    result = subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *args],
                            input=stdin, capture_output=True, timeout=600)
    if result.returncode:
        raise RuntimeError(f"ffmpeg failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def parse_y4m_444(data: bytes) -> np.ndarray:
    """The first frame of a yuv4mpeg2 stream with 8-bit 4:4:4 samples, as (3, H, W) uint8."""
    end = data.index(b"\n")
    fields = data[:end].split()
    if fields[0] != b"YUV4MPEG2":
        raise RuntimeError("ffmpeg did not write a yuv4mpeg2 stream")
    tags = {f[:1]: f[1:] for f in fields[1:]}
    if tags.get(b"C") != b"444":
        raise RuntimeError(f"expected 8-bit 4:4:4 from ffmpeg, got C{tags.get(b'C', b'?')!r}")
    width, height = int(tags[b"W"]), int(tags[b"H"])
    start = data.index(b"\n", end + 1) + 1  # skip the "FRAME[ params]" line
    planes = np.frombuffer(data, np.uint8, count=3 * height * width, offset=start)
    return planes.reshape(3, height, width)


class HevcIntra(ClassicalCodec):
    name, label = "hevc", "HEVC intra (x265)"
    parameter = "x265 QP (one intra frame, preset medium, tune psnr, YCbCr 4:4:4 8-bit)"
    sweep = (51.0, 47.0, 42.0, 37.0, 32.0, 27.0, 22.0)

    def supports(self, image):
        found = ffmpeg_x265()
        return super().supports(image) if found else found

    def encode(self, image, setting):
        ycc = rgb_to_ycbcr(image)
        height, width = image.shape[1:]
        # Raw planar yuv444p in (Y, Cb, Cr planes) and yuv444p out of the decoder: the pixel
        # format never changes, so ffmpeg inserts no swscale conversion and x265 codes the
        # samples computed above (checked with ffmpeg 9: at QP 4 every decoded sample is within
        # 1 of them). range=full only marks the stream's VUI as full range.
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "frame.hevc"
            _ffmpeg(["-f", "rawvideo", "-pix_fmt", "yuv444p", "-video_size", f"{width}x{height}",
                     "-i", "pipe:0", "-frames:v", "1", "-an", "-c:v", "libx265",
                     "-preset", "medium", "-tune", "psnr",
                     "-x265-params", f"qp={int(setting)}:keyint=1:range=full:log-level=error",
                     "-f", "hevc", str(out)], stdin=ycc.tobytes())
            return out.read_bytes()  # the raw elementary stream: its size is the rate

    def decode(self, data):
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / "frame.hevc"
            src.write_bytes(data)
            y4m = _ffmpeg(["-f", "hevc", "-i", str(src), "-frames:v", "1",
                           "-pix_fmt", "yuv444p", "-f", "yuv4mpegpipe", "pipe:1"])
        return ycbcr_to_rgb(parse_y4m_444(y4m))


#: Every classical codec, in the order results are reported.
CODECS: dict[str, type[ClassicalCodec]] = {c.name: c for c in
                                           (Jpeg2000, JpegXl, Avif, WebP, Jpeg, HevcIntra)}


def get_codecs(names: list[str] | None = None) -> list[ClassicalCodec]:
    """Instances of the named codecs (default: all of ``CODECS``).

    Raises:
        ConfigError: A name is not one of ``CODECS``.
    """
    names = list(CODECS) if names is None else names
    unknown = [n for n in names if n not in CODECS]
    if unknown:
        raise ConfigError(f"unknown codec(s) {', '.join(unknown)}; choose from "
                          f"{', '.join(CODECS)}")
    return [CODECS[n]() for n in names]
