"""User-facing errors.

A :class:`DgmError` carries one sentence that says what was wrong and what would be right.
The CLI prints it on stderr and exits with code 2, never with a traceback.
"""

from __future__ import annotations

__all__ = ["DgmError", "ConfigError", "DataError", "CheckpointError"]


class DgmError(Exception):
    """Bad input from a user: a wrong argument, path, file, shape or config."""


class ConfigError(DgmError, ValueError):
    """An unknown or ill-typed hyperparameter or option."""


class DataError(DgmError, ValueError):
    """Data that is missing, corrupt, of the wrong shape, or not finite."""


class CheckpointError(DgmError):
    """A run directory or checkpoint that is missing, truncated or corrupt."""
