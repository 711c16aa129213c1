"""The user-facing error hierarchy: every failure a user can cause is a StcmError subclass."""


class StcmError(Exception):
    """Base class of all errors stcm raises for bad input, bad files or bad configuration."""


class ConfigError(StcmError, ValueError):
    """A configuration is invalid (unknown preset, inconsistent channel groups, bad value)."""


class CheckpointError(StcmError):
    """A checkpoint is missing, incomplete, of an unknown format, or does not match its config."""


class DataError(StcmError):
    """Training or input data cannot be read or is unsuitable (no images, too small, bad bands)."""


class ChecksumError(DataError):
    """A downloaded file differs from the hash its index (or this project) publishes for it."""


class NotFrozenError(StcmError, RuntimeError):
    """Coding was asked of a model whose coding tables were not built (call ``freeze()``)."""


class ContainerError(StcmError):
    """A compressed file cannot be read: base class of the bitstream errors below."""


class NotStcmFileError(ContainerError):
    """The data is not an stcm container (wrong magic bytes): another format, or garbage."""


class UnsupportedVersionError(ContainerError):
    """The container was written by a format version this stcm cannot read."""


class TruncatedError(ContainerError):
    """The container ends before its header, tile table or a stream says it should."""


class CorruptError(ContainerError):
    """A checksum or a field is wrong, or a stream does not decode to exactly its content."""


class ResourceLimitError(StcmError):
    """Coding would exceed a resource budget: an image larger than ``max_pixels``, or memory
    ran out (the allocator's error, with the image size that asked for it)."""


class ImageTooLargeError(ResourceLimitError, ContainerError):
    """The container claims more pixel values than the reader's ``max_pixels`` budget allows."""


class ModelMismatchError(ContainerError):
    """The container was written with a different model (or reference image) than the one given."""


class OutputExistsError(StcmError, FileExistsError):
    """The output file exists; refused unless overwriting is asked for (``--force``)."""


class EngineError(StcmError):
    """An engine directory is missing files, tampered with, or was built for something else."""
