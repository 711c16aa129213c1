"""GPU kernels (CuPy) with NumPy references; depends on nothing else of stcm. See issue 4."""
