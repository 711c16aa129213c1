"""GPU kernels (CuPy) with NumPy references; depends on nothing else of stcm.

``reference`` holds the NumPy specification of each decode-wavefront operation (skew and
unskew of the column-major cache, scale-to-index, quantize and dequantize a step, scatter a
step into its cache column); ``cuda`` holds their bit-exact CuPy RawKernel twins, usable when
``available()`` is True. Only NumPy is required: the CuPy import is guarded.

The runtime reaches both through one seam, ``select(device)``: the module of operations for
arrays on that device, with ``xp`` its array library (NumPy or CuPy).
"""
from stcm.kernels import cuda, reference
from stcm.kernels.cuda import available
from stcm.kernels.reference import (dequantize_step, quantize_step, scale_to_index,
                                    scatter_column, skew_columns, unskew_columns)

__all__ = [
    "available",
    "dequantize_step",
    "quantize_step",
    "scale_to_index",
    "scatter_column",
    "select",
    "skew_columns",
    "unskew_columns",
]


def select(device: str):
    """The kernels for arrays on ``device``: ``cuda`` (CuPy arrays) for ``"cuda"`` when CuPy
    can run, else ``reference`` (NumPy arrays, the CPU default and the specification).

    Example:
        >>> select("cpu").xp.__name__
        'numpy'
    """
    return cuda if device == "cuda" and available() else reference
