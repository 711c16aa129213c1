"""The runnable examples in docstrings (``>>>``) of every stcm module pass."""
import doctest
import importlib
import pkgutil

import pytest



SUBPACKAGES = ("stcm.models", "stcm.export", "stcm.runtime", "stcm.kernels")
# Modules of an optional extra: tested where the extra is installed (CI's test extra has it).
OPTIONAL = {"stcm.zarr": ("numcodecs", "zarr")}


def _modules():
    # The sub-packages live in their own top-level folders (package_dir), so walk each one.
    names = []
    for package in ("stcm", *SUBPACKAGES):
        names.append(package)
        path = importlib.import_module(package).__path__
        for info in pkgutil.iter_modules(path, package + "."):
            if not info.ispkg and not info.name.endswith("__main__"):
                names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name):
    for package in OPTIONAL.get(name, ()):
        pytest.importorskip(package)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
