"""The user-facing error hierarchy: every failure a user can cause is a StcmError subclass."""


class StcmError(Exception):
    """Base class of all errors stcm raises for bad input, bad files or bad configuration."""


class ConfigError(StcmError, ValueError):
    """A configuration is invalid (unknown preset, inconsistent channel groups, bad value)."""


class CheckpointError(StcmError):
    """A checkpoint is missing, incomplete, of an unknown format, or does not match its config."""


class DataError(StcmError):
    """Training or input data cannot be read or is unsuitable (no images, too small, bad bands)."""


class NotFrozenError(StcmError, RuntimeError):
    """Coding was asked of a model whose coding tables were not built (call ``freeze()``)."""
