"""Loading an engine directory: verified manifest -> coding tables + a backend."""
from __future__ import annotations

import os
from pathlib import Path

from stcm.errors import EngineError
from stcm.manifest import read_manifest
from stcm.runtime.backends.base import Backend, backend_name, get_backend
from stcm.tables import CodingTables


def load_engine(folder: str | os.PathLike, backend: str = "onnxruntime", device: str = "cpu",
                **options) -> tuple[CodingTables, Backend]:
    """Verifies ``folder`` (every file's sha256) and returns its tables and a backend
    (onnxruntime on ``device``, or tensorrt, which runs on the GPU). ``options`` go to the
    backend (onnxruntime: ``providers``, ``threads``; tensorrt: ``gpu``)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    tables = CodingTables.load(folder)
    if tables.model_id.hex() != manifest["model_id"]:
        raise EngineError(f"{folder}: the tables belong to another model than the manifest")
    if backend_name(backend) == "onnxruntime":
        options = {"device": device, **options}
    return tables, get_backend(backend, folder, manifest, **options)
