"""``stcm.Codec``: compress arrays and files to stcm containers and back.

    codec = stcm.Codec()                      # the built-in default model
    data = codec.compress(image, quality=0.75)  # image: (bands, H, W), any dtype and band count
    image_back = codec.decompress(data)

Pipeline per group of 3 bands (``stcm.bands``): normalise, pad to a multiple of 64,
g_a and the quality gain, z through the factorized prior, h_s, then the scheduler codes y
tile by tile and step by step; decoding mirrors it and ends with g_s. With ``refine=N`` the
encoder first improves y and z of each band group by N gradient steps on the model's own
rate-distortion loss (``stcm.models.refine``); the decoder is the same. A time series codes its
first image alone and every later one with the first image's latent as temporal reference.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from stcm import kernels
from stcm.bands import BandNormalization, denormalize
from stcm.errors import (ConfigError, DataError, ModelMismatchError, ResourceLimitError,
                         StcmError)
from stcm.manifest import INT8_SYNTHESIS
from stcm.quality import check_quality
from stcm.runtime.ans import FactorizedCoder, pinned_scale_table
from stcm.runtime.backends.base import backend_name, get_backend
from stcm.runtime.blocks import BlockReader, block_count, run_blocked
from stcm.runtime.container import (DEFAULT_MAX_PIXELS, DTYPES, KIND_Y, KIND_Z, Header,
                                    check_model, check_reference, peek_header, quality_on_grid,
                                    read_container, short_id, write_container)
from stcm.runtime.georeference import Georeference
from stcm.runtime.grids import (SHIFT_MAX_SIDE, estimate_shift, georeferenced_mapping,
                                is_translation, nearest_cells, refine_translation,
                                reference_grid, resample_latent)
from stcm.runtime.header import (BAND_GROUP_SIZE, DOWNSAMPLE, HYPER_DOWNSAMPLE, IDENTITY_GRID,
                                 MAX_TILE_SIZE, ReferenceGrid, footprint_of, latent_shape_of,
                                 padding_of)
from stcm.runtime.heap import retain_freed_memory
from stcm.runtime.mask import restore_missing
from stcm.runtime.profile import Recorder, span
from stcm.runtime.progress import Progress
from stcm.runtime.scheduler import (HYPER_MARGIN, Scheduler, check_backed, code_z, decode_z,
                                    dilate_box)
from stcm.runtime.scene import (FILL_BLOCK, ArraySink, ArraySource, BlockSource, PixelSink,
                                Scene)
from stcm.runtime.spill import SPILL_BYTES, SpilledLatent
from stcm.runtime.transfer import HostStaging, to_host
from stcm.shift_tables import shift_latent, split_move

if TYPE_CHECKING:  # the torch path only: engines need neither torch nor stcm.models
    from stcm.models.codec import STCM

DEFAULT_QUALITY = 0.75
# Transforms run in overlapping blocks on large images (runtime/blocks.py): pixels for g_a,
# latent positions for g_s; each block's halo is the model's ``transform_halo`` (positions),
# its transforms' whole receptive field, so blocks give the unblocked values. Sizes: the
# `small` model's g_a on a 2048-pixel block held 1.2 GB of activations, on 1024 0.34 GB;
# g_s on 128 positions 1.3 GB, on 64 0.37 GB (peak RSS growth, 1 thread); the halos then
# add ~20 % of the work instead of ~10 %.
ANALYSIS_BLOCK, SYNTHESIS_BLOCK = 1024, 64
# The hyper transforms too, in blocks of HYPER_BLOCK latent positions: whole, a 10240^2
# scene's would hold ~2 GB of activations. h_s with ``HYPER_MARGIN`` z cells around each
# block, and only for exact models, whose integer h_s gives any crop the whole one's values
# (a float model's streams expect the whole computation); h_a (encoder only: z is coded as
# it comes out) with HYPER_ANALYSIS_HALO positions, over its receptive field of 7.
HYPER_BLOCK, HYPER_ANALYSIS_HALO = 256, 16
# How an image with a temporal reference uses it: "auto" decides per tile (header flags),
# "on" uses it everywhere (one coding pass; what stcm 0.3 always did).
TEMPORAL_MODES = ("auto", "on")
# How torch (CPU and CUDA), NumPy and onnxruntime report a failed allocation.
_ALLOCATION_FAILED = re.compile(r"not enough memory|can't allocate memory|out of memory|"
                                r"failed to allocate|bad[ _]alloc", re.IGNORECASE)


def _allocation_failures_are_limits(method):
    """Re-raises an allocator's failure inside ``method`` as a ``ResourceLimitError``: a
    traceback from torch's allocator tells a user nothing about what to change."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except StcmError:
            raise
        except Exception as exc:  # onnxruntime's errors are not RuntimeErrors
            if not isinstance(exc, MemoryError) and not _ALLOCATION_FAILED.search(str(exc)):
                raise
            raise ResourceLimitError(f"out of memory while coding ({type(exc).__name__}: "
                                     f"{str(exc)[:200]}); free memory, or refuse such images "
                                     f"up front with a smaller max_pixels") from exc
    return wrapped


#: how ``compress`` reads a 3-D array: None (bands, H, W), refusing shapes that look
#: channels-last; "chw" (bands, H, W) whatever the shape; "hwc" (H, W, bands)
LAYOUTS = (None, "chw", "hwc")
# Without a layout, a last axis this short under a first axis this long is refused.
AMBIGUOUS_LAST_AXIS = 4
AMBIGUOUS_FIRST_AXIS = 16


def check_temporal(temporal) -> None:
    """ConfigError unless ``temporal`` is one of ``TEMPORAL_MODES``."""
    if temporal not in TEMPORAL_MODES:
        raise ConfigError(f"temporal must be one of {TEMPORAL_MODES}, got {temporal!r}")


def default_model_path() -> Path:
    """The bundled default model (installed with the package)."""
    import stcm

    return Path(stcm.__file__).resolve().parent / "weights" / "default.safetensors"


class Codec:
    """A loaded model or engine, ready to compress and decompress.

    Args:
        model: None for the built-in default model, a checkpoint path, or an ``STCM``.
        engine: an engine directory written by ``stcm export`` (instead of ``model``); it is
            all the runtime needs, no checkpoint.
        backend: ``torch`` (default for models), ``onnxruntime``/``ort`` (default for
            engines) or ``tensorrt``.
        tile_size: latent tile size (x16 pixels); each tile is one ANS stream.
        tile_batch: tiles per step call; None: for exact models as many as hold
            ``scheduler.STEP_POSITIONS`` positions (8 tiles of 64, 512 of 8; any value gives the same
            streams), 1 for float models (the only value they allow, see scheduler.py).
        naive: use the naive decoder (whole masked stack recomputed at every step); for tests
            and benchmarks.
        progress: report progress on large images, every stage (analysis blocks, entropy
            steps, synthesis blocks; ``runtime.progress``): True or None, a bar on a
            terminal and plain lines on stderr elsewhere (logs, batch jobs); False: nothing.
        strict_numerics: refuse streams encoded with other float numerics (another backend
            or device), which would decode to wrong pixels; False only to measure that.
        device: ``cpu`` or ``cuda``: where the torch backend runs the model, or which
            onnxruntime execution provider runs an engine (with CuPy, the scheduler's
            arrays then stay on the GPU and only a step's indexes and symbols cross to the
            host: ``stcm.kernels.select``).
        engine_options: options of an engine's backend (onnxruntime: ``providers``, a list
            of execution providers, and ``threads``, the float transforms' intra-op threads;
            tensorrt: ``gpu``, the device index).
        max_pixels: the decoder's budget: containers (and references) claiming more than this
            many values (height x width x bands) are refused (``ImageTooLargeError``) before
            any work; default 2**31.

    Example:
        >>> import numpy as np
        >>> codec = Codec()  # the built-in default model
        >>> image = np.random.default_rng(0).integers(0, 4096, (4, 48, 40)).astype(np.uint16)
        >>> data = codec.compress(image, quality=0.5)
        >>> back = codec.decompress(data)
        >>> back.shape, back.dtype, data[:4]
        ((4, 48, 40), dtype('uint16'), b'STCM')
    """

    def __init__(self, model: STCM | str | os.PathLike | None = None, *,
                 engine: str | os.PathLike | None = None, backend: str | None = None,
                 tile_size: int = 64, tile_batch: int | None = None, naive: bool = False,
                 progress: bool | None = False, strict_numerics: bool = True,
                 device: str = "cpu", engine_options: dict | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigError(f"max_pixels must be a positive integer, got {max_pixels!r}")
        self.max_pixels = max_pixels
        retain_freed_memory()  # opt-in (STCM_RETAIN_HEAP=1): see runtime/heap.py
        if engine is None and engine_options:
            raise ConfigError("engine_options configure an engine's backend; this codec runs "
                              "a checkpoint (pass engine=DIR)")
        if engine is not None:
            if model is not None:
                raise ConfigError("give a model or an engine, not both")
            from stcm.runtime.engine import load_engine

            if backend is not None and backend_name(backend) == "torch":
                raise ConfigError("the torch backend runs checkpoints (--model), not engine "
                                  "directories; use --backend onnxruntime or tensorrt with "
                                  "--engine")
            self.tables, self.backend = load_engine(engine, backend or "onnxruntime",
                                                    device=device, **(engine_options or {}))
            self.model = None
        else:
            name = backend_name(backend or "torch")
            if name != "torch":
                raise ConfigError(f"the {name} backend runs exported engines: run `stcm export "
                                  "CHECKPOINT DIR`, then use --engine DIR")
            # Checkpoints need torch and stcm.models; imported here so engines never do.
            from stcm.runtime.backends.torch_backend import load_model, model_tables

            if model is None:
                model = default_model_path()
                if not model.is_file():
                    raise ConfigError(f"no built-in default model at {model}; pass a "
                                      "checkpoint (stcm train writes one) with --model / "
                                      "Codec(model=...)")
            model = self.model = load_model(model)
            self.tables = model_tables(model)
            self.backend = get_backend("torch", model, device)
        if tile_batch is None and not self.backend.batch_invariant:
            tile_batch = 1
        if tile_batch is not None and (not isinstance(tile_batch, int) or tile_batch < 1):
            raise ConfigError(f"tile_batch must be a positive integer, got {tile_batch!r}")
        if tile_batch not in (None, 1) and not self.backend.batch_invariant:
            # Float step networks give batch-dependent results (see scheduler.py): a stream
            # coded with several tiles per call would not decode exactly elsewhere.
            raise ConfigError("tile_batch > 1 needs exact (integer) step networks; this model "
                              "or backend is float, use tile_batch=1")
        if not 1 <= tile_size <= MAX_TILE_SIZE:
            raise ConfigError(f"tile_size must be in 1..{MAX_TILE_SIZE} latent positions, got "
                              f"{tile_size}")
        self.cfg = self.tables.config
        self.model_id = self.tables.model_id
        self.table = pinned_scale_table(self.cfg.scale_min, self.cfg.scale_max,
                                        self.cfg.scale_levels)
        t = self.tables
        self.z_coder = FactorizedCoder(t.z_pmfs, t.z_lengths, t.z_offsets)
        self.device = self.backend.device
        self.xp = kernels.select(self.device).xp  # NumPy, or CuPy on a GPU
        self.medians = self.xp.asarray(t.z_medians)
        self.tile_size = tile_size
        self.scheduler = Scheduler(self.backend, self.cfg, self.table, tile_size,
                                   tile_batch, naive)
        self.progress = progress
        self.strict_numerics = strict_numerics
        self._recorder: Recorder | None = None

    @property
    def recorder(self) -> Recorder | None:
        """A ``runtime.profile.Recorder`` receiving timing spans of every coding run, or None."""
        return self._recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        self._recorder = self.backend.recorder = self.scheduler.recorder = recorder

    @property
    def numerics(self) -> str:
        """The arithmetic of this codec's entropy path (recorded in every stream)."""
        if self.backend.exact:  # the naive and the wavefront decoder agree bit for bit
            return self.backend.numerics
        return self.backend.numerics + ("-naive" if self.scheduler.naive else "")

    def sequential_steps(self, bands: int, height: int, width: int) -> int:
        """Sequential decode steps (the wavefront's critical path) of a ``bands`` x
        ``height`` x ``width`` image in this codec's tiles: every band group's plan."""
        groups = -(-bands // BAND_GROUP_SIZE)
        return groups * self.scheduler.plan(latent_shape_of(height, width)).steps

    def _stage(self, name: str, *inputs):
        return self.backend.run(name, *inputs)[0]

    # -- arrays --------------------------------------------------------------------------------
    def compress(self, image: np.ndarray, quality: float = DEFAULT_QUALITY, *,
                 georef: Georeference | None = None, extra: dict | None = None,
                 reference: bytes | None = None, refine: int = 0,
                 temporal: str = "auto", layout: str | None = None,
                 missing: np.ndarray | None = None) -> bytes:
        """Compresses an image (bands, H, W) or (H, W) of any integer or float dtype.

        ``layout="hwc"`` reads a channels-last (H, W, bands) array instead; without a
        layout, a shape that looks channels-last (last axis <= 4, first > 16) is refused,
        and ``layout="chw"`` insists on (bands, H, W). Decoding returns (bands, H, W).

        ``georef`` is stored in the container; ``extra`` (JSON-able) travels in its header.
        Missing samples, those equal to ``georef.nodata`` (NaN too), NaN in a float image
        without a nodata value, and those ``missing`` marks ((H, W) or (bands, H, W) bool,
        True: missing; e.g. a GDAL mask band; (H, W, bands) with ``layout="hwc"``), are
        coded losslessly as a mask, left out of the band ranges and decode to the nodata
        value (NaN or 0 without one).
        ``reference`` is the container of an earlier image of the same place with the same
        bands in the same order (the first of its series; any size and pixel grid that
        overlaps this image): its decoded latent, put on this image's grid
        (``stcm.runtime.grids``: from the georeferences, else by phase correlation),
        becomes the temporal context. ``temporal``
        says how: ``"auto"`` (default) codes each tile both with and without it and keeps
        the smaller stream (a flag per tile in the header; a reference that does not help
        then costs nothing but the flags and encode time), ``"on"`` uses it for every tile
        (one coding pass).
        ``refine`` > 0 runs that many steps of encode-time latent refinement per band group
        (``stcm.models.refine``): smaller files at the same quality for a much slower
        encode; the stream decodes with any decoder of the model. It needs a checkpoint
        (gradients), not an engine.
        """
        image = self._as_bands(image, layout)
        if layout == "hwc" and missing is not None and np.ndim(missing) == 3:
            missing = np.moveaxis(missing, -1, 0)
        return self.compress_source(ArraySource(image, missing), quality, georef=georef,
                                    extra=extra, reference=reference, refine=refine,
                                    temporal=temporal)

    def compress_source(self, source: BlockSource, quality: float = DEFAULT_QUALITY, *,
                        georef: Georeference | None = None, extra: dict | None = None,
                        reference: bytes | None = None, refine: int = 0,
                        temporal: str = "auto", label: str = "encode") -> bytes:
        """``compress`` for an image read block by block (``runtime.scene.BlockSource``,
        e.g. a GeoTIFF's windows, ``runtime.rasterblocks``): the image is never held whole
        as float, the same bytes as ``compress`` of the whole array. ``label`` names the run
        in progress lines. With ``refine`` (the band groups go through the model whole)
        the image is read whole; a reference's phase correlation reads a window of at most
        SHIFT_MAX_SIDE^2 pixels."""
        shape = (source.bands, source.height, source.width)
        self._check_refine(refine, shape)
        check_temporal(temporal)
        check_quality(quality)
        if np.dtype(source.dtype).name not in DTYPES:
            raise DataError(f"pixels of type {np.dtype(source.dtype).name} are not supported; "
                            f"use one of {', '.join(DTYPES)}")
        scene = self._scan(source, georef.nodata if georef else None, label)
        ref = ref_id = None
        if reference is not None:
            ref_header = peek_header(reference, self.max_pixels)
            if ref_header.reference_id is not None:
                raise DataError("the reference must be the first image of its series (a "
                                "container coded without a reference of its own)")
            ref_size = (ref_header.height, ref_header.width)
            # Refuse pairs that are not the same place before the slow decode.
            mapping = georeferenced_mapping(ref_header.georef, georef, ref_size, shape[1:])
            decoded, latents = self._decompress(reference, None)
            ref = _Reference(latents, ref_size,
                             self._mapping(mapping, decoded.pixels, shape[1:],
                                           lambda rows, cols: source.read(
                                               rows, cols, range(source.bands))[0]))
            del decoded
            ref_id = hashlib.sha256(reference).digest()
        with span(self._recorder, "encode", "encode"):
            data, _ = self._compress(scene, quality, georef, ref, ref_id, extra,
                                     refine=refine, temporal=temporal, keep_latents=False,
                                     label=label)
        return data

    def decompress(self, data: bytes, reference: bytes | None = None, *,
                   window: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Decompresses a container to the original shape, band count and dtype.

        ``reference`` is the container of the series' first image, needed when ``data`` was
        coded with a temporal reference (``compress_series``). ``window`` (col_off, row_off,
        width, height), rasterio's ``Window`` order, decodes only that part of the image:
        only the latent tiles it needs are decoded and only their streams read
        (``Scheduler.window_plan``); the latent is bit-identical to the whole decode's, the
        pixels within the float synthesis' level (docs/determinism.md); exact models only. Of
        a reference only the latent is decoded, never its pixels, and with a window of an
        image on the reference's grid only the reference's tiles under the window's plan.
        """
        return self.decompress_image(data, reference, window=window).pixels

    def decompress_image(self, data: bytes, reference: bytes | None = None, *,
                         window: tuple[int, int, int, int] | None = None) -> "DecodedImage":
        """Like ``decompress``, but also returns the georeferencing and the header."""
        ref = self._decoded_reference(reference, data, window) if reference is not None else None
        with span(self._recorder, "decode", "decode"):
            return self._decompress(data, ref, reference, window, keep_latents=False)[0]

    def _decoded_reference(self, reference: bytes, data: bytes, window) -> "_Reference":
        """The temporal reference of ``data``, decoded as far as ``data`` needs: its latents
        only (the reference's pixels are never used), and for a ``window`` of an image on
        the reference's own grid only the reference's tiles under the window's plan."""
        box = None
        if window is not None and self.backend.exact:
            header = read_container(data, self.max_pixels).header
            ref_header = read_container(reference, self.max_pixels).header
            if (header.reference_id is not None and header.reference_grid is None
                    and ref_header.latent_shape == header.latent_shape):
                box = self._window_plan(header, window)[0].crop
        ref_header, latents = self._decode(reference, None, latents_only=True, latent_box=box)
        return _Reference(latents, (ref_header.height, ref_header.width))

    def decompress_into(self, data: bytes, sink: PixelSink, reference: bytes | None = None, *,
                        window: tuple[int, int, int, int] | None = None,
                        label: str = "decode") -> Header:
        """``decompress_image``, the pixels written block by block into ``sink``
        (``runtime.scene.PixelSink``, e.g. a GeoTIFF's windows, ``runtime.rasterblocks``)
        instead of returned: the image is never held whole, the same pixels. Returns the
        header; ``label`` names the run in progress lines."""
        ref = self._decoded_reference(reference, data, window) if reference is not None else None
        with span(self._recorder, "decode", "decode"):
            return self._decode(data, ref, reference, window, sink=sink,
                                    keep_latents=False, label=label)[0]

    def compress_series(self, images: list[np.ndarray], quality: float = DEFAULT_QUALITY, *,
                        georefs: list[Georeference | None] | None = None,
                        refine: int = 0, temporal: str = "auto",
                        layout: str | None = None) -> list[bytes]:
        """Compresses images of one place (same bands), the first as the temporal reference
        of all others (paper section 3.4), each put on the first one's grid as in
        ``compress``; ``refine``, ``temporal`` and ``layout`` as in ``compress``, for every
        image."""
        check_temporal(temporal)
        check_quality(quality)
        if not images:
            raise DataError("compress_series needs at least one image")
        images = [self._as_bands(image, layout) for image in images]
        georefs = georefs or [None] * len(images)
        size = images[0].shape[1:]
        mappings = [georeferenced_mapping(georefs[0], georef, size, image.shape[1:])
                    for image, georef in zip(images[1:], georefs[1:])]  # before any work

        def scene(image, georef):
            self._check_refine(refine, image.shape)
            return Scene.scan(ArraySource(image), georef.nodata if georef else None)

        first, latents = self._compress(scene(images[0], georefs[0]), quality, georefs[0],
                                        None, None, refine=refine)
        out = [first]
        ref_id = hashlib.sha256(first).digest()
        for image, georef, mapping in zip(images[1:], georefs[1:], mappings):
            ref = _Reference(latents, size, self._mapping(
                mapping, images[0], image.shape[1:],
                lambda rows, cols, i=image: i[:, rows[0]:rows[1], cols[0]:cols[1]]))
            out.append(self._compress(scene(image, georef), quality, georef, ref, ref_id,
                                      refine=refine, temporal=temporal)[0])
        return out

    def decompress_series(self, blobs: list[bytes]) -> list[np.ndarray]:
        """Inverse of ``compress_series``: the first container is the reference of the rest."""
        if not blobs:
            return []
        first, latents = self._decompress(blobs[0], None)
        ref = _Reference.decoded(first, latents)
        return [first.pixels] + [self._decompress(b, ref, blobs[0],
                                                        keep_latents=False)[0].pixels
                                 for b in blobs[1:]]

    # -- internals -----------------------------------------------------------------------------
    def _mapping(self, georeferenced, reference_pixels: np.ndarray,
                 size: tuple[int, int], read) -> ReferenceGrid | None:
        """Where the reference lies against the image of ``size`` (height, width) pixels
        (``read((r0, r1), (c0, c1))`` reads a window of it): the georeferenced mapping when
        both have one, a translation corrected by phase correlation when the model can move
        a latent by pixels (latent shift tables), else the shift phase correlation finds;
        None: on one grid."""
        mapping = georeferenced
        shiftable = self.tables.shift_tables is not None
        if mapping is None:
            h, w = (min(n, SHIFT_MAX_SIDE) for n in size)
            shift = estimate_shift(reference_pixels, read((0, h), (0, w)))
            mapping = (1.0, 0.0, shift[0], 0.0, 1.0, shift[1]) if shift else IDENTITY_GRID
        elif shiftable and is_translation(mapping):
            mapping = refine_translation(mapping, reference_pixels, size, read)
        return reference_grid(mapping, shiftable)

    def _check_refine(self, refine, shape: tuple[int, ...] = ()) -> None:
        """ConfigError unless ``refine`` is a step count this codec can run on an image of
        ``shape`` ((bands, H, W))."""
        if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
            raise ConfigError(f"refine must be a non-negative integer (gradient steps), got "
                              f"{refine!r}")
        if not refine:
            return
        if self.model is None:
            raise ConfigError("latent refinement needs gradients through the model, which an "
                              "engine does not have: compress with a checkpoint (--model, or "
                              "none for the built-in model) to refine; any engine of the same "
                              "model decodes the result")
        if len(shape) >= 2:
            from stcm.models.refine import check_refinable  # a checkpoint's codec: torch is here

            check_refinable(int(refine), shape[-2], shape[-1])

    def _refine(self, x, quality, y, z, steps, reference, gains, on_step):
        """Encode-time refinement of (y, z) (``stcm.models.refine``), on the torch backend's
        tensors; returns the refined pair as runtime arrays."""
        from stcm.models.refine import refine_latents

        tensor = self.backend.to_tensor
        refined = refine_latents(self.model, tensor(x), quality, tensor(y), tensor(z), steps,
                                 reference=None if reference is None else tensor(reference),
                                 gains=tuple(tensor(g) for g in gains), on_step=on_step)
        return self.backend.from_tensor(refined.y), self.backend.from_tensor(refined.z)

    def _scan(self, source: BlockSource, nodata, label: str) -> Scene:
        """``Scene.scan`` of a source read block by block, with progress: on a large file
        its strip reads (one pass, two with a partly missing band) take a while before the
        first transform block."""
        progress = self._progress(label, source.height * source.width)
        progress.stage("scan", -(-source.height // FILL_BLOCK), "strips")

        def on_strip(total: int) -> None:
            if total > progress.total:  # the fill's second pass
                progress.add(total - progress.total)
            progress.update()

        try:
            return Scene.scan(source, nodata, on_strip)
        finally:
            progress.close()

    def _progress(self, label: str, pixels: int, refine: int = 0) -> Progress:
        """The progress of a run over ``pixels`` pixels: shown for images of a megapixel or
        more, or refined ones (refinement is slow at any size); ``self.progress`` True or
        None: a bar on a terminal, plain lines elsewhere."""
        show = self.progress
        if pixels < 2 ** 20 and not refine:
            show = False
        return Progress.choose(label, show)

    @staticmethod
    def _as_bands(image, layout: str | None = None) -> np.ndarray:
        if layout not in LAYOUTS:
            raise ConfigError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        image = np.asarray(image)
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or 0 in image.shape:
            raise DataError(f"expected an image of shape (bands, H, W) or (H, W), got "
                            f"{image.shape}")
        if layout == "hwc":
            image = np.moveaxis(image, -1, 0)
        elif (layout is None and image.shape[-1] <= AMBIGUOUS_LAST_AXIS
              and image.shape[0] > AMBIGUOUS_FIRST_AXIS):
            # An (H, W, 3) array from PIL or imageio read as (bands, H, W) would be coded as
            # H bands of W x 3 pixels, for minutes, with no error.
            raise DataError(f"an array of shape {image.shape} looks channels-last (H, W, "
                            "bands); pass layout='hwc' for that, or layout='chw' if it "
                            "really is (bands, H, W)")
        if image.dtype.name not in DTYPES:
            raise DataError(f"pixels of type {image.dtype.name} are not supported; use one of "
                            f"{', '.join(DTYPES)}")
        if image.shape[0] > 4096:
            raise DataError(f"{image.shape[0]} bands: stcm expects (bands, H, W) layout; "
                            "pass layout='hwc' for channels-last arrays")
        return image

    @_allocation_failures_are_limits
    def _compress(self, scene: "Scene | np.ndarray", quality, georef,
                  reference: "_Reference | None", reference_id, extra=None, refine: int = 0,
                  temporal: str = "auto", *, canvas_fallback: bool = True,
                  keep_latents: bool = True, label: str = "encode"):
        """Codes ``scene`` (or a (bands, H, W) array); returns (container, the decoded
        latents per band group, or an empty list without ``keep_latents``)."""
        check_quality(quality)
        if not isinstance(scene, Scene):
            scene = Scene.scan(ArraySource(self._as_bands(scene, "chw")),
                               georef.nodata if georef else None)
        refine = int(refine)
        quality = quality_on_grid(quality)  # code at exactly the quality the header stores
        xp = self.xp
        h, w = scene.height, scene.width
        grid = reference.grid if reference is not None else None
        if (temporal == "auto" and canvas_fallback and grid is not None
                and (grid.origin != (0, 0) or grid.shifted)):
            # The canvas's extra rows and columns cost bits of their own (another 64-pixel
            # block at many sizes: +16-20 % on 512^2 Sentinel-2 crops), and a latent moved by
            # a few pixels in latent space is an estimate: also code the image on its own
            # grid with the reference moved by the nearest whole latent positions (per tile
            # with or without it, so never above coding alone) and, for a shifted grid, on
            # the canvas (exactly aligned; it won on near-copies), and keep the smallest.
            args = (scene, quality, georef)
            options = dict(keep_latents=keep_latents, label=label)
            grids = [grid, nearest_cells(grid)]
            if grid.shifted:
                grids.append(reference_grid(grid.mapping))
            return min((self._compress(*args, _Reference(reference.latents, reference.size, g),
                                       reference_id, extra, refine, temporal,
                                       canvas_fallback=False, **options) for g in grids),
                       key=lambda c: len(c[0]))
        references, top, left = None, 0, 0
        if reference is not None:
            if len(reference.latents) != scene.band_groups:
                raise DataError(f"the reference image has {len(reference.latents)} band "
                                f"groups, this one {scene.band_groups}: a series must share "
                                "its bands")
            if reference.grid is not None:
                top, left = reference.grid.origin
            references = reference.on_grid(latent_shape_of(top + h, left + w),
                                           self.device, self.tables.shift_tables)
        # The canvas: the image after ``top`` rows and ``left`` columns of its edge, and its
        # edge repeated to multiples of 64 (the transforms' and hyper transforms' strides;
        # replicated borders cost fewer bits than zeros).
        canvas = (top + h, left + w)
        padded = tuple(n + p for n, p in zip(canvas, padding_of(*canvas)))
        gain_enc, gain_dec = (xp.asarray(g) for g in self.tables.gains(quality))
        streams: dict[tuple[int, int, int], bytes] = {}
        checksums: dict[tuple[int, int, int], int] = {}  # per stream, format 2.4
        latents = []
        latent_shape = latent_shape_of(top + h, left + w)
        # Latent positions over replicated padding only get no symbol (format 3.0): they
        # decode to their predicted mean, and cost nothing.
        footprint = footprint_of(top, left, h, w)
        passes = 2 if references is not None and temporal == "auto" else 1
        steps = self.scheduler.plan(latent_shape).calls  # progress: step calls
        progress = self._progress(label, h * w, refine)
        intra_tiles: list[int] = []
        # auto on the image's own grid also gets every tile coded alone: the container of
        # the image coded without a reference, kept if smaller (no reference id, bitmap or
        # grid to pay for), so that auto never costs a byte more than no reference.
        # (streams, latents, checksums)
        alone = ({}, [], {}) if (references is not None and temporal == "auto"
                                 and (top, left) == (0, 0)) else None
        groups = scene.band_groups
        try:
            for g in range(groups):
                name = f"group {g + 1}/{groups}" if groups > 1 else ""

                def read(r0, r1, c0, c1, g=g):
                    return xp.asarray(scene.group_block(g, (r0, r1), (c0, c1), (top, left)))

                progress.stage(f"{name} analysis".strip(),
                               block_count(padded, ANALYSIS_BLOCK), "blocks")
                y = run_blocked(lambda t: self._stage("analysis", t),
                                BlockReader(padded, read), ANALYSIS_BLOCK,
                                self.cfg.transform_halo * DOWNSAMPLE, down=DOWNSAMPLE,
                                on_block=progress.update)
                y *= gain_enc  # in place: no second latent-sized array
                z = run_blocked(lambda t: self._stage("hyper_analysis", t), y, HYPER_BLOCK,
                                HYPER_ANALYSIS_HALO, down=HYPER_DOWNSAMPLE)
                ref = references[g] if references is not None else None
                if ref is not None and ref.shape != y.shape:
                    raise DataError(f"the reference image has another band count than this "
                                    f"one (latent {tuple(ref.shape)} vs {tuple(y.shape)})")
                if refine:
                    # The refined z is coded as it is, not h_a(refined y): the search
                    # optimised the pair, and the decoder only ever sees z_hat. It sees the
                    # band group whole.
                    progress.stage(f"{name} refine".strip(), refine, "steps")
                    with span(self._recorder, "refine", "refine"):
                        y, z = self._refine(read(0, canvas[0], 0, canvas[1]), quality, y, z,
                                            refine, ref, (gain_enc, gain_dec),
                                            on_step=progress.update)
                z_key = (g, KIND_Z, 0)
                with span(self._recorder, "z encode", "ans"):
                    z_hat, streams[z_key], checksums[z_key] = code_z(self.z_coder, z,
                                                                     self.medians)
                del z
                progress.stage(f"{name} steps".strip(), passes * steps, "steps")
                with self.backend.entropy_threads():
                    hyper = self._hyper(z_hat)
                    if ref is None or temporal == "on":
                        coded = self.scheduler.encode(y, hyper, ref, on_step=progress.update,
                                                      coded=footprint, gain=gain_enc)
                    else:
                        coded, intra, coded_alone = self._encode_choosing_modes(
                            y, hyper, ref, gain_enc, progress, footprint)
                        intra_tiles += [g * len(intra) + t for t, i in enumerate(intra) if i]
                        if alone is not None:
                            for t, (b, c) in enumerate(zip(coded_alone.streams,
                                                           coded_alone.checksums)):
                                alone[0][(g, KIND_Y, t)], alone[2][(g, KIND_Y, t)] = b, c
                            alone[0][z_key], alone[2][z_key] = streams[z_key], checksums[z_key]
                            if keep_latents:
                                alone[1].append(coded_alone.y_hat * gain_dec)
                        del coded_alone
                del y, hyper  # the next group's analysis needs the memory
                for t, (data, checksum) in enumerate(zip(coded.streams, coded.checksums)):
                    streams[(g, KIND_Y, t)], checksums[(g, KIND_Y, t)] = data, checksum
                if keep_latents:
                    latents.append(coded.y_hat * gain_dec)
                del coded
        finally:
            progress.close()
        header = Header(
            model_id=short_id(self.model_id), height=h, width=w, bands=scene.bands,
            dtype=scene.dtype.name, normalization=scene.norm.to_dict(), quality=quality,
            tile_size=self.tile_size, georef=georef,
            reference_id=short_id(reference_id) if reference_id is not None else None,
            numerics=self.numerics, extra=extra or {}, intra_tiles=intra_tiles,
            reference_grid=reference.grid if reference is not None else None,
            mask=scene.mask)
        with span(self._recorder, "container write", "container"):
            data = write_container(header, streams, checksums)
            if alone is not None:
                plain = write_container(dataclasses.replace(
                    header, reference_id=None, intra_tiles=(), reference_grid=None), alone[0],
                    alone[2])
                if len(plain) < len(data):
                    return plain, alone[1]
            return data, latents

    def _encode_choosing_modes(self, y, hyper, ref, gain, progress, footprint):
        """Codes each tile with and without the reference and keeps, per tile, the smaller
        stream; returns (the kept ``CodedLatent``, intra flags, the all-alone one). Tiles
        are coded independently given their side input, but the channel context reads
        earlier groups across tile borders, so a mixed choice is coded once more with the
        flags in force (the decoder's view), and kept only if it is smaller than both
        uniform choices: the streams then never cost more than coding alone or with the
        reference everywhere."""
        step = progress.update
        with_ref = self.scheduler.encode(y, hyper, ref, on_step=step, coded=footprint,
                                         gain=gain)
        alone = self.scheduler.encode(y, hyper, None, on_step=step, coded=footprint)
        intra = [len(b) < len(a) for a, b in zip(with_ref.streams, alone.streams)]
        n = len(intra)
        candidates = [(with_ref, [False] * n), (alone, [True] * n)]
        if 0 < sum(intra) < n:
            progress.add(self.scheduler.plan(tuple(y.shape[-2:])).calls)
            candidates.append((self.scheduler.encode(y, hyper, ref, intra, on_step=step,
                                                     coded=footprint, gain=gain), intra))
        # Ties go to the reference everywhere: no bitmap.
        return (*min(candidates, key=lambda c: sum(map(len, c[0].streams))), alone)

    @_allocation_failures_are_limits
    def _decode(self, data: bytes, reference: "_Reference | None",
                reference_data: bytes | None = None, window=None, *,
                sink: PixelSink | None = None, keep_latents: bool = True,
                label: str = "decode", latents_only: bool = False, latent_box=None):
        """Decodes ``data`` (its ``window``) into ``sink`` (default: an ``ArraySink``);
        returns (header, the latents per band group, or [] without ``keep_latents``).

        ``latents_only``: no pixels (a temporal reference's latents); with ``latent_box``
        (row0, col0, rows, cols of the latent) only the tiles those positions need
        (``Scheduler.window_plan``): the latents are whole-sized, exact inside the box, zeros
        where nothing was decoded (what a window of an image coded against it reads)."""
        with span(self._recorder, "container read", "container"):
            container = read_container(data, self.max_pixels)
        header = container.header
        check_model(container, self.model_id)
        written = header.numerics
        if self.strict_numerics and written != self.numerics:
            raise ModelMismatchError(
                f"this stream was encoded with {written} arithmetic and this codec uses "
                f"{self.numerics}; float entropy models are only bit-exact on the same "
                "numerics, so decode it with the backend that encoded it (exact models, the "
                "default since stcm 0.2, decode anywhere)")
        check_reference(container, reference_data)
        check_backed(container, self.cfg.M, self.cfg.N)
        references = None
        if header.reference_id is not None and reference is not None:
            if len(reference.latents) != header.band_groups:
                raise DataError(f"the reference image has {len(reference.latents)} band "
                                f"groups, this one {header.band_groups}")
            reference = _Reference(reference.latents, reference.size, header.reference_grid)
            references = reference.on_grid(header.latent_shape, self.device,
                                           self.tables.shift_tables)
        gain_enc, gain_dec = (self.xp.asarray(g) for g in self.tables.gains(header.quality))
        col, row, width, height = (check_window(window, header.height, header.width)
                                   if window is not None else (0, 0, header.width, header.height))
        top, left = header.origin
        top, left = top + row, left + col  # the window's first pixel on the canvas
        shape = header.latent_shape
        plan, synth = (self._window_plan(header, window) if window is not None
                       else (None, (0, 0, *shape)))
        pixels = not latents_only
        if latent_box is not None:
            plan = self.scheduler.window_plan(shape, latent_box, header.tile_size)
        crop = plan.crop if plan is not None else (0, 0, *shape)
        latents = []
        sink = sink if sink is not None else ArraySink()
        if pixels:
            sink.open(header, (col, row, width, height))
        norm = BandNormalization.from_dict(header.normalization)
        nodata = header.georef.nodata if header.georef else None
        groups = header.band_groups
        progress = self._progress(label, height * width)
        steps = (plan if plan is not None else  # progress: step calls
                 self.scheduler.plan(shape, header.tile_size)).calls
        cut = (synth[0] - crop[0], synth[1] - crop[1], synth[2], synth[3])
        r, c = top - synth[0] * DOWNSAMPLE, left - synth[1] * DOWNSAMPLE
        # An engine's int8 g_s, where it has one, for 8-bit images only (export/int8.py).
        synthesis = (INT8_SYNTHESIS if header.dtype == "uint8" and self.backend.runs_int8_synthesis
                     and INT8_SYNTHESIS in self.backend.signatures else "synthesis")
        try:
            for g in range(groups):
                name = f"group {g + 1}/{groups} " if groups > 1 else ""
                progress.stage(name + "steps", steps, "steps")
                with span(self._recorder, "z decode", "ans"):
                    z_hat = decode_z(self.z_coder, container.stream(g, KIND_Z, 0),
                                     (self.cfg.N, *header.z_shape), self.medians, self.device,
                                     container.checksum(g, KIND_Z, 0))
                # Only the streams of the plan's tiles are read (and their CRCs checked).
                read = plan.tiles if plan is not None else range(header.tiles)
                tiles = {t: container.stream(g, KIND_Y, t) for t in read}
                checksums = {t: container.checksum(g, KIND_Y, t) for t in read}
                ref = references[g] if references is not None else None
                if ref is not None and plan is not None:
                    ref = _cut(ref, crop)
                with self.backend.entropy_threads():
                    hyper = self._hyper(z_hat, crop if plan is not None else None)
                    intra = header.intra_mask(g) if ref is not None else None
                    # The stream's tile size decides, not this codec's.
                    y_hat = self.scheduler.decode(tiles, shape, hyper, ref, intra,
                                                  tile_size=header.tile_size,
                                                  on_step=progress.update, plan=plan,
                                                  checksums=checksums,
                                                  coded=container.coded_box, gain=gain_enc)
                del hyper, tiles, checksums, z_hat
                y_hat *= gain_dec  # in place: no second latent-sized array
                latent = y_hat
                del y_hat
                if not pixels:
                    if latent_box is not None:
                        whole = self.xp.zeros((1, self.cfg.M, *shape), np.float32)
                        _cut(whole, crop)[...] = latent  # a view: writes into whole
                        latent = whole
                    latents.append(latent)
                    continue
                if keep_latents:
                    latents.append(latent)
                bands = range(g * BAND_GROUP_SIZE, min((g + 1) * BAND_GROUP_SIZE, header.bands))
                part = BandNormalization(norm.dtype, norm.lo[bands.start: bands.stop],
                                         norm.hi[bands.start: bands.stop])

                def write(r0, r1, c0, c1, x_hat, bands=bands, part=part):
                    # The block's part of the decoded area, in its rows and columns.
                    a0, a1 = max(r0, r), min(r1, r + height)
                    b0, b1 = max(c0, c), min(c1, c + width)
                    if a0 >= a1 or b0 >= b1:
                        return
                    x = to_host(self.xp.clip(x_hat[0, : len(bands), a0 - r0: a1 - r0,
                                                   b0 - c0: b1 - c0], 0, 1))
                    pixels = denormalize(x, part)
                    rows, cols = (a0 - r, a1 - r), (b0 - c, b1 - c)
                    if header.mask is not None:
                        missing = header.mask.window(
                            header.height, header.width, header.bands,
                            (row + rows[0], row + rows[1]), (col + cols[0], col + cols[1]),
                            bands)
                        restore_missing(pixels, missing, nodata)
                    sink.write(bands, rows, cols, pixels)

                latent_cut = _cut(latent, cut)
                progress.stage(name + "synthesis",
                               block_count(latent_cut.shape[-2:], SYNTHESIS_BLOCK), "blocks")
                run_blocked(lambda t: self._stage(synthesis, t), latent_cut,
                            SYNTHESIS_BLOCK, self.cfg.transform_halo, up=DOWNSAMPLE, write=write,
                            on_block=progress.update)
                del latent, latent_cut
        finally:
            progress.close()
        return header, latents

    def _decompress(self, data: bytes, reference: "_Reference | None",
                    reference_data: bytes | None = None, window=None,
                    keep_latents: bool = True) -> tuple["DecodedImage", list]:
        """``_decode`` into an array: (the decoded image, the latents)."""
        sink = ArraySink()
        header, latents = self._decode(data, reference, reference_data, window, sink=sink,
                                       keep_latents=keep_latents)
        missing = None
        if header.mask is not None:
            col, row, width, height = (check_window(window, header.height, header.width)
                                       if window is not None
                                       else (0, 0, header.width, header.height))
            missing = header.mask.window(header.height, header.width, header.bands,
                                         (row, row + height), (col, col + width))
        return DecodedImage(sink.pixels, header.georef, header, missing, window), latents

    def _window_plan(self, header: Header, window) -> tuple:
        """(plan, synth): the decode plan of ``window`` (``Scheduler.window_plan``) and the
        latent box g_s runs on, the window's latent cells and the synthesis halo around them
        (as exact as the blocked whole decode, runtime/blocks.py)."""
        col, row, width, height = check_window(window, header.height, header.width)
        if not self.backend.exact:
            # A float side input computed on a crop may differ in the last bits from the
            # whole latent's, which decodes the stream to garbage (docs/determinism.md).
            raise ConfigError("window decode needs an exact (integer) entropy model; this "
                              "model or backend is float: decode the whole image and crop it")
        top, left = header.origin
        top, left = top + row, left + col
        r0, c0 = top // DOWNSAMPLE, left // DOWNSAMPLE
        synth = dilate_box((r0, c0, -(-(top + height) // DOWNSAMPLE) - r0,
                            -(-(left + width) // DOWNSAMPLE) - c0), self.cfg.transform_halo,
                           header.latent_shape)
        return self.scheduler.window_plan(header.latent_shape, synth, header.tile_size), synth

    def _hyper(self, z_hat, crop=None):
        """Psi = h_s(z_hat), or its ``crop`` (row0, col0, rows, cols; a multiple of the z
        grid) from the z cells under it and ``HYPER_MARGIN`` more around them. An exact
        model's whole Psi is computed in blocks of ``HYPER_BLOCK`` positions, into a
        ``SpilledLatent`` when it is over ``SPILL_BYTES`` (its file goes with it)."""
        a = HYPER_DOWNSAMPLE
        if crop is None:
            if not self.backend.exact:
                return self._stage("hyper_synthesis", z_hat)
            _, _, zh, zw = z_hat.shape
            spilled = None
            if isinstance(z_hat, np.ndarray) and 8 * self.cfg.M * zh * zw * a * a > SPILL_BYTES:
                spilled = SpilledLatent(2 * self.cfg.M, zh * a, zw * a)
            out = run_blocked(lambda t: self._stage("hyper_synthesis", t), z_hat,
                              HYPER_BLOCK // a, HYPER_MARGIN, up=a,
                              write=spilled.write if spilled is not None else None)
            return spilled if spilled is not None else out
        r0, c0, h, w = (v // a for v in crop)
        zr, zc, _, _ = z_cut = dilate_box((r0, c0, h, w), HYPER_MARGIN, z_hat.shape[-2:])
        hyper = self._stage("hyper_synthesis", _cut(z_hat, z_cut))
        return _cut(hyper, ((r0 - zr) * a, (c0 - zc) * a, h * a, w * a))


def check_window(window, height: int, width: int) -> tuple[int, int, int, int]:
    """``window`` (col_off, row_off, width, height) as four ints; ConfigError unless it is
    that, with a positive size, DataError unless it lies inside the ``height`` x ``width``
    image."""
    try:
        values = tuple(window)
    except TypeError:
        values = ()
    if len(values) != 4 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                   for v in values):
        raise ConfigError(f"a window is four integers (col_off, row_off, width, height), got "
                          f"{window!r}")
    col, row, w, h = (int(v) for v in values)
    if w < 1 or h < 1:
        raise ConfigError(f"a window needs a positive width and height, got {w} x {h}")
    if col < 0 or row < 0 or col + w > width or row + h > height:
        raise DataError(f"the window (col_off={col}, row_off={row}, width={w}, height={h}) "
                        f"does not lie inside the {width} x {height} image")
    return col, row, w, h


def _cut(x, box):
    """(1, C, h, w) ``x`` cut to ``box`` (row0, col0, rows, cols)."""
    r0, c0, h, w = box
    return x[:, :, r0: r0 + h, c0: c0 + w]


@dataclass
class _Reference:
    """A decoded temporal reference: its latents (one (1, M, h, w) tensor per band group),
    its size in pixels (height, width), and where it lies against the image it helps code
    (``runtime.grids``; None: on its grid)."""
    latents: list  # NumPy or CuPy arrays, on the codec's device
    size: tuple[int, int]
    grid: ReferenceGrid | None = None

    @classmethod
    def decoded(cls, image: "DecodedImage", latents: list) -> "_Reference":
        return cls(latents, (image.header.height, image.header.width))

    def on_grid(self, latent_shape: tuple[int, int], device: str,
                shift_tables: tuple[np.ndarray, np.ndarray] | None = None) -> list:
        """The latents resampled onto an image's latent grid, as arrays on ``device`` (the
        same arrays when it is the reference's own grid). A ``shifted`` grid moves each latent
        by the remainder of whole positions with ``shift_tables`` (the model's), then copies
        it by whole positions."""
        grid = self.grid
        if grid is None and all(t.shape[-2:] == latent_shape for t in self.latents):
            return self.latents
        mapping = grid.mapping if grid is not None else None
        move = None
        if grid is not None and grid.shifted:
            if shift_tables is None:
                raise ModelMismatchError("the image was coded with its reference moved by the "
                                         "model's latent shift tables, which this model lacks")
            (whole_x, move_x), (whole_y, move_y) = (split_move(mapping[2]),
                                                    split_move(mapping[5]))
            move = (move_y, move_x)
            mapping = (1.0, 0.0, float(DOWNSAMPLE * whole_x), 0.0, 1.0,
                       float(DOWNSAMPLE * whole_y))
        out = []
        for t in self.latents:
            latent = to_host(t[0])
            if move is not None:
                latent = shift_latent(latent, move, *shift_tables)
            out.append(HostStaging.upload(
                resample_latent(latent, mapping, self.size, latent_shape)[None], device))
        return out


@dataclass
class DecodedImage:
    """A decoded image: its pixels, georeferencing, header and, when the container has a
    mask, the (bands, H, W) bool array of its missing samples (True: missing); ``window``: the
    part of the image decoded (col_off, row_off, width, height), None for all of it."""
    pixels: np.ndarray
    georef: Georeference | None
    header: Header
    missing: np.ndarray | None = None
    window: tuple[int, int, int, int] | None = None  # (col_off, row_off, width, height)
