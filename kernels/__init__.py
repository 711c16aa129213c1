"""GPU kernels (CuPy) with NumPy references; depends on nothing else of stcm. See issue 4.

``reference`` holds the NumPy specification of each decode-wavefront operation (skew and
unskew of the column-major cache, scale-to-index, quantize and dequantize a step, scatter a
step into its cache column); ``cuda`` holds their bit-exact CuPy RawKernel twins, usable when
``available()`` is True. Only NumPy is required: the CuPy import is guarded.
"""
from stcm.kernels.cuda import available
from stcm.kernels.reference import (dequantize_step, quantize_step, scale_to_index,
                                    scatter_column, skew_columns, unskew_columns)

__all__ = [
    "available",
    "dequantize_step",
    "quantize_step",
    "scale_to_index",
    "scatter_column",
    "skew_columns",
    "unskew_columns",
]
