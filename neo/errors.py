"""User-facing errors.

Anything a user can fix (a bad config key, a missing file, a layout that cannot fit) raises a `NeoError`; the CLI
prints its message as one red line and exits 2. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class NeoError(Exception):
    """An error the user can fix. The message names the problem and the fix in one line."""

    exit_code = 2


class ConfigError(NeoError):
    """The composed configuration is invalid (unknown key, bad value, inconsistent combination)."""


class DataError(NeoError):
    """An input file or dataset is missing, unreadable or inconsistent."""


class LayoutError(NeoError):
    """A mesh or sharding layout does not match the devices or the model."""


class CheckpointError(NeoError):
    """A run directory or checkpoint is missing or incompatible."""


class TrainingError(NeoError):
    """Training stopped for a reason the user must act on (e.g. a non-finite loss)."""


class StorageError(NeoError):
    """A path or URL cannot be used: no such bucket or object, no credentials, or the endpoint is unreachable."""
