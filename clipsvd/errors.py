"""Errors the user can act on: each message says which file or field is wrong and what was expected."""


class ClipsvdError(Exception):
    """Base class of every error clipsvd raises on purpose."""


class DataError(ClipsvdError, ValueError):
    """A dataset, split file or image is missing, malformed or unreadable."""


class CheckpointError(ClipsvdError, ValueError):
    """A checkpoint is missing, truncated or belongs to another architecture or method."""


class ConfigError(ClipsvdError, ValueError):
    """A configuration value is out of range or names something that does not exist."""



class StoreError(DataError):
    """The run store cannot be used: a bad run id, or a folder that cannot be written (permission, read-only file
    system, no space left, a path that is a file). Raised before a run starts, so no training is wasted."""
