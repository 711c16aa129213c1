"""Backends run the coding stages; the scheduler and the entropy coder are shared.

    backend = get_backend("onnxruntime", engine_dir)    # or "torch", "tensorrt"
    (y,) = backend.run("analysis", x)

Stage names and signatures: ``stcm.export.stages``.
"""
from stcm.runtime.backends.base import BACKENDS, Backend, get_backend, register

__all__ = ["BACKENDS", "Backend", "get_backend", "register"]
