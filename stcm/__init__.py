"""stcm: learned compression of remote-sensing imagery with a spatial-temporal context model.

The public API lives here; heavy sub-packages are imported on first use so that
``import stcm`` stays cheap and the CLI starts fast.
"""
from pathlib import Path

from stcm.errors import (CheckpointError, ConfigError, ContainerError, CorruptError, DataError,
                         EngineError,
                         ModelMismatchError, NotFrozenError, NotStcmFileError, OutputExistsError,
                         StcmError, TruncatedError, UnsupportedVersionError)

__version__ = "0.3.0"

#: Folder of the bundled sample images (real RGB aerial and Sentinel-2 crops; see SOURCES.md).
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"

__all__ = [
    "CheckpointError",
    "ConfigError",
    "ContainerError",
    "CorruptError",
    "DataError",
    "EngineError",
    "ModelMismatchError",
    "NotFrozenError",
    "NotStcmFileError",
    "OutputExistsError",
    "StcmError",
    "TruncatedError",
    "UnsupportedVersionError",
    "Codec",
    "ModelConfig",
    "SAMPLES_DIR",
    "__version__",
]


def __getattr__(name):
    if name == "Codec":
        from stcm.runtime.codec import Codec

        return Codec
    if name == "ModelConfig":
        from stcm.config import ModelConfig

        return ModelConfig
    raise AttributeError(f"module 'stcm' has no attribute {name!r}")
