"""Imports CompressAI 1.2.8 for the peer benchmarks without its heavy optional dependencies.

CompressAI is not a dependency of stcm. Install it apart, without dependencies:

    pip download --no-deps compressai==1.2.8 -d /tmp/dl
    pip install --no-deps --target /tmp/compressai_pkg /tmp/dl/compressai-1.2.8-*.whl
    pip install --target /tmp/compressai_deps einops pandas requests   # then delete numpy*
    COMPRESSAI_PATH=/tmp/compressai_pkg:/tmp/compressai_deps python benchmarks/peer_decode.py

Its package __init__ imports point-cloud and torchvision transform registries that the image
models never use; those modules (torch_geometric, torchvision) are replaced by inert stubs
here, so the timings are of CompressAI's own image code and C++ rANS.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types

STUBBED = ("torch_geometric", "torchvision")


class _Any:
    """Stands for any class, function or decorator of a stubbed module."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return args[0] if len(args) == 1 and callable(args[0]) and not kwargs else self


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Any


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUBBED:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


def import_compressai():
    """The compressai package, from COMPRESSAI_PATH (os.pathsep-separated) if set."""
    for entry in reversed(os.environ.get("COMPRESSAI_PATH", "").split(os.pathsep)):
        if entry and entry not in sys.path:
            sys.path.insert(0, entry)
    sys.meta_path.insert(0, _StubFinder())
    try:
        import compressai
    except ImportError as exc:
        raise SystemExit(f"CompressAI is not importable ({exc}); see {__file__} for how to "
                         "install it apart") from None
    return compressai
