"""Loading an engine directory: verified manifest -> coding tables + a backend."""
from __future__ import annotations

import os
from pathlib import Path

from stcm.export.manifest import read_manifest
from stcm.runtime.backends.base import Backend, get_backend
from stcm.export.tables import CodingTables


def load_engine(folder: str | os.PathLike, backend: str = "onnxruntime"
                ) -> tuple[CodingTables, Backend]:
    """Verifies ``folder`` (every file's sha256) and returns its tables and a backend."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    tables = CodingTables.load(folder)
    if tables.model_id.hex() != manifest["model_id"]:
        from stcm.errors import EngineError

        raise EngineError(f"{folder}: the tables belong to another model than the manifest")
    return tables, get_backend(backend, folder, manifest)
