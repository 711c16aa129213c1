"""stcm as a numcodecs codec and a zarr v3 serializer: chunks of a zarr array (and of xarray
and Dask on top of it) stored as stcm streams (``docs/zarr.md``).

    import numcodecs
    codec = numcodecs.get_codec({"id": "stcm", "quality": 0.5})   # = stcm.zarr.Stcm(0.5)
    data = codec.encode(chunk)            # chunk: (bands, H, W) or (H, W), any stcm dtype
    back = codec.decode(data)             # same shape and dtype; lossy

    zarr.create_array(store, shape=..., chunks=(3, 512, 512), dtype="uint16",
                      serializer=StcmSerializer(quality=0.5), compressors=None)

Each chunk is coded as one image (or, with a ``t`` axis in ``layout``, as one time series:
``Codec.compress_series``, the chunk's first date the temporal reference of the others, the
streams in one series frame, ``stcm.runtime.series``). Only the configuration travels with
a codec object (it pickles to Dask workers as a few fields); the model or engine is loaded
once per process and configuration (``runtime_codec``) on first use. Needs
``pip install 'stcm[zarr]'``.
"""
from __future__ import annotations

import asyncio
import os
import threading
from dataclasses import dataclass

import numpy as np

try:
    import numcodecs.abc
    from numcodecs.compat import ensure_bytes, ensure_ndarray, ndarray_copy
    from zarr.abc.codec import ArrayBytesCodec
    from zarr.registry import register_codec
except ImportError as exc:  # pragma: no cover - the zarr extra is missing
    raise ImportError(f"stcm.zarr needs numcodecs and zarr ({exc}): pip install "
                      "'stcm[zarr]'") from exc

from stcm.errors import ConfigError, CorruptError, DataError
from stcm.quality import check_quality
from stcm.runtime.codec import DEFAULT_QUALITY, Codec, check_temporal
from stcm.runtime.header import DTYPES, MAX_TILE_SIZE
from stcm.runtime.series import pack_series, unpack_series

__all__ = ["Stcm", "StcmSerializer", "ZARR_NAME", "runtime_codec"]

#: the codec's name in zarr v3 metadata: zarr-python's convention for numcodecs codecs
ZARR_NAME = "numcodecs.stcm"
AXES = "tchw"  # time, bands, rows, columns: the order the runtime codes them in
DEFAULT_LAYOUTS = {2: "hw", 3: "chw"}  # layout=None: by the chunk's number of dimensions

_CODECS: dict[tuple, tuple[Codec, threading.Lock]] = {}
_CODECS_LOCK = threading.Lock()


def runtime_codec(model: str | None, engine: str | None, backend: str | None,
                  tile_size: int, device: str) -> tuple[Codec, threading.Lock]:
    """The process's ``Codec`` for one configuration, loaded on first use, and the lock
    that serialises its calls (a ``Codec`` keeps per-run state; scale out with processes,
    e.g. Dask workers, not threads)."""
    key = (model, engine, backend, tile_size, device)
    with _CODECS_LOCK:  # one load per key even when threads ask at once
        if key not in _CODECS:
            codec = Codec(model, engine=engine, backend=backend, tile_size=tile_size,
                          device=device)
            _CODECS[key] = (codec, threading.Lock())
        return _CODECS[key]


def check_layout(layout) -> None:
    """ConfigError unless ``layout`` names a chunk's axes: distinct letters of ``tchw``
    (time, bands, rows, columns) with ``h`` and ``w``, or None (by the chunk's dimensions)."""
    if layout is None:
        return
    if (not isinstance(layout, str) or not set(layout) <= set(AXES)
            or len(set(layout)) != len(layout) or not {"h", "w"} <= set(layout)):
        raise ConfigError(f"layout must name each axis of a chunk once with letters of "
                          f"{AXES!r} (t time, c bands, h rows, w columns), h and w included, "
                          f"e.g. 'chw', 'hw', 'hwc' or 'tchw'; got {layout!r}")


def _path_or_none(name: str, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    # Only a path travels in a codec's configuration (zarr metadata, Dask pickles): never
    # a model object.
    raise ConfigError(f"{name} must be a path or None, got {type(value).__name__}; save a "
                      "model with stcm.models.checkpoint.save_checkpoint and pass its path"
                      if name == "model" else
                      f"{name} must be a path or None, got {type(value).__name__}")


class Stcm(numcodecs.abc.Codec):
    """numcodecs codec: a chunk array to one stcm stream (lossy) and back.

    Args:
        quality: in [0, 1], 0 = smallest stream, 1 = best fidelity.
        layout: the chunk's axes, letters of ``tchw`` (``docs/zarr.md``): ``"chw"``,
            ``"hw"``, ``"hwc"``, ... ; with ``t`` the chunk's dates are coded as one series,
            the first the temporal reference of the others. None: ``"hw"`` for 2-D and
            ``"chw"`` for 3-D chunks (recorded in each stream, a few bytes).
        model: a checkpoint path, or None for the built-in model (unless ``engine``).
        engine: an engine directory (``stcm export``) instead of a checkpoint.
        backend, tile_size, device: as in ``stcm.Codec``.
        temporal: how later dates use the reference (``"auto"`` or ``"on"``, as in
            ``Codec.compress``).

    Example:
        >>> import numpy as np
        >>> codec = Stcm(quality=0.5)
        >>> chunk = np.random.default_rng(0).integers(0, 4096, (2, 40, 48)).astype(np.uint16)
        >>> back = codec.decode(codec.encode(chunk))
        >>> back.shape, back.dtype
        ((2, 40, 48), dtype('uint16'))
        >>> Stcm.from_config({"quality": 0.5}) == codec
        True
    """

    codec_id = "stcm"

    def __init__(self, quality: float = DEFAULT_QUALITY, layout: str | None = None,
                 model: str | os.PathLike | None = None, engine: str | os.PathLike | None = None,
                 backend: str | None = None, tile_size: int = 64, device: str = "cpu",
                 temporal: str = "auto"):
        check_quality(quality)
        check_layout(layout)
        check_temporal(temporal)
        model, engine = _path_or_none("model", model), _path_or_none("engine", engine)
        if model is not None and engine is not None:
            raise ConfigError("give a model or an engine, not both")
        if backend is not None and not isinstance(backend, str):
            raise ConfigError(f"backend must be a name or None, got {backend!r}")
        if (isinstance(tile_size, bool) or not isinstance(tile_size, int)
                or not 1 <= tile_size <= MAX_TILE_SIZE):
            raise ConfigError(f"tile_size must be an integer in 1..{MAX_TILE_SIZE}, got "
                              f"{tile_size!r}")
        if not isinstance(device, str):
            raise ConfigError(f"device must be a name such as 'cpu', got {device!r}")
        self.quality = float(quality)
        self.layout = layout
        self.model = model
        self.engine = engine
        self.backend = backend
        self.tile_size = tile_size
        self.device = device
        self.temporal = temporal

    def get_config(self) -> dict:
        return {"id": self.codec_id, "quality": self.quality, "layout": self.layout,
                "model": self.model, "engine": self.engine, "backend": self.backend,
                "tile_size": self.tile_size, "device": self.device, "temporal": self.temporal}

    def __hash__(self) -> int:  # equal configs are equal codecs (numcodecs' __eq__)
        return hash(tuple(sorted(self.get_config().items())))

    def _runtime(self) -> tuple[Codec, threading.Lock]:
        return runtime_codec(self.model, self.engine, self.backend, self.tile_size,
                             self.device)

    def layout_for(self, ndim: int) -> str:
        """The layout of a chunk of ``ndim`` dimensions under this codec (DataError if none
        fits)."""
        layout = self.layout if self.layout is not None else DEFAULT_LAYOUTS.get(ndim)
        if layout is None:
            raise DataError(f"a {ndim}-D chunk needs an explicit layout (e.g. 'tchw' for "
                            "time, bands, rows, columns); 2-D and 3-D chunks default to "
                            "'hw' and 'chw'")
        if len(layout) != ndim:
            raise DataError(f"layout {layout!r} is for {len(layout)}-D chunks, got a "
                            f"{ndim}-D chunk")
        return layout

    def encode(self, buf) -> bytes:
        """A chunk array (any stcm dtype; its shape per ``layout``) to one stcm container, or
        to one series frame when ``layout`` has a ``t`` axis."""
        array = ensure_ndarray(buf)
        layout = self.layout_for(array.ndim)
        dates = _to_canonical(array, layout)  # (time, bands, rows, columns)
        codec, lock = self._runtime()
        with lock:
            if "t" in layout:
                return pack_series(codec.compress_series(list(dates), self.quality,
                                                         temporal=self.temporal))
            # Without a configured layout, a 2-D chunk and a 1-band 3-D chunk code alike:
            # the stream records which it was, so that decode restores the shape.
            extra = {"layout": layout} if self.layout is None else None
            return codec.compress(dates[0], self.quality, extra=extra)

    def decode(self, buf, out=None):
        """The chunk of a stream written by ``encode``: its shape and dtype, decoded pixels;
        written into ``out`` (and returned) when given."""
        data = ensure_bytes(buf)
        codec, lock = self._runtime()
        with lock:
            if self.layout is not None and "t" in self.layout:
                layout = self.layout
                dates = codec.decompress_series(unpack_series(data))
                if len({d.shape for d in dates}) != 1:
                    raise CorruptError("the dates of an stcm series chunk differ in shape: "
                                       f"{[d.shape for d in dates]}")
                dates = np.stack(dates)
            else:
                image = codec.decompress_image(data)
                layout = self.layout or image.header.extra.get("layout", "chw")
                if self.layout is None and layout not in DEFAULT_LAYOUTS.values():
                    raise CorruptError(f"stcm chunk stream records layout {layout!r:.40}; "
                                       f"expected one of {sorted(DEFAULT_LAYOUTS.values())}")
                dates = image.pixels[None]
        return ndarray_copy(_from_canonical(dates, layout), out)


def _to_canonical(array: np.ndarray, layout: str) -> np.ndarray:
    """A chunk in ``layout`` as (time, bands, rows, columns), size 1 for absent axes."""
    order = [layout.index(a) for a in AXES if a in layout]
    out = array.transpose(order)
    if "c" not in layout:
        out = np.expand_dims(out, 1 if "t" in layout else 0)
    if "t" not in layout:
        out = out[None]
    return out


def _from_canonical(dates: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of ``_to_canonical`` for decoded (time, bands, rows, columns) pixels."""
    for axis, letter in ((1, "c"), (0, "t")):  # bands first: the time axis stays at 0
        if letter not in layout:
            if dates.shape[axis] != 1:
                raise CorruptError(f"stcm chunk stream holds {dates.shape[axis]} "
                                   f"{'bands' if letter == 'c' else 'dates'}; layout "
                                   f"{layout!r} has no {letter!r} axis")
            dates = dates.squeeze(axis)
    order = [layout.index(a) for a in AXES if a in layout]
    return dates.transpose(np.argsort(order))


def trim_fill(array: np.ndarray, fill_value) -> np.ndarray:
    """``array`` without the trailing slices, along each axis, that hold only
    ``fill_value`` (NaN matches NaN); at least one element along each axis is kept.

    zarr pads edge chunks with the fill value: coded as pixels they would cost bits and
    stretch a band's min/max normalisation; trimmed, they come back exactly.

    >>> trim_fill(np.array([[1, 2, 0], [0, 0, 0]]), 0)
    array([[1, 2]])
    """
    fill = np.asarray(fill_value)
    is_fill = (np.isnan(array) if fill.dtype.kind == "f" and np.isnan(fill)
               else array == fill)
    stops = []
    for axis in range(array.ndim):
        others = tuple(a for a in range(array.ndim) if a != axis)
        kept = np.flatnonzero(~is_fill.all(axis=others))
        stops.append(int(kept[-1]) + 1 if kept.size else 1)
    return array[tuple(slice(0, stop) for stop in stops)]


@dataclass(frozen=True)
class StcmSerializer(ArrayBytesCodec):
    """zarr v3 array-to-bytes codec (``serializer=``) over ``Stcm``, named
    ``numcodecs.stcm`` in the array's metadata with ``Stcm``'s configuration.

    Trailing fill-value rows, columns (and bands, dates) of a chunk, zarr's padding of edge
    chunks, are not coded: they decode to exactly the fill value.
    """

    codec: Stcm
    is_fixed_size = False

    def __init__(self, codec: Stcm | None = None, **config):
        if codec is not None and config:
            raise TypeError("give a Stcm codec or its configuration, not both")
        object.__setattr__(self, "codec", codec if codec is not None else Stcm(**config))

    @classmethod
    def from_dict(cls, data: dict) -> StcmSerializer:
        if data.get("name") != ZARR_NAME:
            raise ConfigError(f"not an {ZARR_NAME} codec: {data.get('name')!r:.60}")
        config = dict(data.get("configuration") or {})
        config.pop("id", None)
        return cls(Stcm.from_config(config))

    def _configuration(self) -> dict:
        """The codec's configuration without its numcodecs id (zarr names it instead)."""
        return {k: v for k, v in self.codec.get_config().items() if k != "id"}

    def to_dict(self) -> dict:
        return {"name": ZARR_NAME, "configuration": self._configuration()}

    def evolve_from_array_spec(self, array_spec) -> StcmSerializer:
        # Record the layout in the metadata, so that no stream needs to.
        if self.codec.layout is None:
            layout = self.codec.layout_for(len(array_spec.shape))
            return StcmSerializer(**{**self._configuration(), "layout": layout})
        return self

    def validate(self, *, shape, dtype, chunk_grid) -> None:
        chunk_shape = getattr(chunk_grid, "chunk_shape", shape)
        self.codec.layout_for(len(chunk_shape))
        name = dtype.to_native_dtype().name
        if name not in DTYPES:
            raise DataError(f"the stcm codec stores {', '.join(DTYPES)} arrays, not {name}")

    def compute_encoded_size(self, input_byte_length: int, chunk_spec) -> int:
        raise NotImplementedError  # variable: a compressed stream

    async def _encode_single(self, chunk_array, chunk_spec):
        array = trim_fill(chunk_array.as_numpy_array(), chunk_spec.fill_value)
        data = await asyncio.to_thread(self.codec.encode, array)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _decode_single(self, chunk_bytes, chunk_spec):
        array = await asyncio.to_thread(self.codec.decode, chunk_bytes.to_bytes())
        shape = tuple(chunk_spec.shape)
        if array.ndim != len(shape) or any(n > s for n, s in zip(array.shape, shape)):
            raise CorruptError(f"stcm chunk decodes to shape {array.shape}, which does not "
                               f"fit the array's chunk shape {shape}")
        out = np.full(shape, chunk_spec.fill_value, chunk_spec.dtype.to_native_dtype())
        out[tuple(slice(0, n) for n in array.shape)] = array
        return chunk_spec.prototype.nd_buffer.from_numpy_array(out)


# Also registered here, not only through the entry point, so that a source checkout works.
register_codec(ZARR_NAME, StcmSerializer)
