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


_FULL_ERRNOS = {28: "no space left on the device", 27: "a file-size limit was hit", 122: "the disk quota is exceeded"}
_FULL_TEXT = {"No space left on device": 28, "File too large": 27, "Disk quota exceeded": 122}


def storage_full(exc: BaseException) -> StorageError | None:
    """The one-line error for a write that failed because the disk (or a size limit, or a quota) is full, or None.

    Libraries report it in their own ways (OSError from Python, a tensorstore ValueError quoting the OS error from
    orbax), so the exception and its causes are inspected by errno and by the OS's message.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = current.errno if isinstance(current, OSError) else None
        if code not in _FULL_ERRNOS:
            code = next((c for text, c in _FULL_TEXT.items() if text in str(current)), None)
        if code is not None:
            where = getattr(current, "filename", None)
            at = f" writing {where}" if where else ""
            return StorageError(
                f"{_FULL_ERRNOS[code]}{at}; free space (or raise the limit) and rerun the same command: what was "
                "saved before (checkpoints, finished shards) is intact and the rerun continues from it"
            )
        current = current.__cause__ or current.__context__
    return None
