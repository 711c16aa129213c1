"""Packaging for stcm.

The four code folders live at the top level so the architecture is visible at a glance; they
install as sub-packages of ``stcm`` through ``package_dir``.
"""
from setuptools import setup

EVAL = ["imagecodecs>=2024.1", "pytorch-msssim>=1.0", "bjontegaard>=1.3", "matplotlib>=3.7"]
# stcm.zarr (docs/zarr.md): tested with numcodecs 0.16.6, zarr 3.1.6, xarray 2026.9.0 and
# dask/distributed 2026.8.0.
ZARR = ["numcodecs>=0.13", "zarr>=3.1", "xarray>=2025.1"]

setup(
    name="stcm",
    version="0.3.0",
    description="Deployment-optimized inference engine for learned remote-sensing image compression "
    "(Spatial-Temporal Context Model)",
    python_requires=">=3.10",
    packages=["stcm", "stcm.models", "stcm.export", "stcm.runtime", "stcm.runtime.backends",
              "stcm.kernels", "stcm.evaluation"],
    package_dir={
        "stcm": "stcm",
        "stcm.models": "models",
        "stcm.export": "export",
        "stcm.runtime": "runtime",
        "stcm.kernels": "kernels",
        "stcm.evaluation": "evaluation",
    },
    package_data={"stcm": ["samples/*.tif", "samples/*.md", "weights/*.safetensors",
                            "weights/*.md"]},
    install_requires=[
        # 2.13.0 is the CPU build available offline here; a looser pin pulls a multi-GB CUDA build.
        "torch>=2.4,<=2.14.1",
        "numpy>=1.24",
        "onnx>=1.16",
        "onnxruntime>=1.18",
        "constriction>=0.4,<0.6",
        "safetensors>=0.4",
        "tqdm>=4.60",
        "rasterio>=1.3",
        "pillow>=10",
    ],
    extras_require={
        # TensorRT is not on PyPI for every platform; install it from NVIDIA's index on GPU hosts.
        "gpu": ["onnxruntime-gpu>=1.18", "cupy-cuda12x>=13"],
        # `stcm eval`: classical codecs, MS-SSIM, BD-rate and the RD plot (docs/evaluation.md).
        "eval": EVAL,
        # The numcodecs codec and zarr v3 serializer; distributed for scaling out with Dask.
        "zarr": [*ZARR, "dask[distributed]>=2025.1"],
        # scipy writes the netCDF stand-in of the fetch tests (netCDF-3); the zarr tests
        # write through Dask's local scheduler, so they need dask but not distributed.
        "test": ["pytest>=8", "scipy>=1.10", *EVAL, *ZARR, "dask>=2025.1"],
    },
    entry_points={
        "console_scripts": ["stcm=stcm.cli:main"],
        "numcodecs.codecs": ["stcm = stcm.zarr:Stcm"],
        "zarr.codecs": ["numcodecs.stcm = stcm.zarr:StcmSerializer"],
    },
)
