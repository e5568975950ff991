"""Crash-safe file writes shared by identities, key slots and configuration."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from childvault._i18n import _t
from childvault.keys._errors import StorageError


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` so a crash leaves either the old or the new file.

    Writes a temporary file in the same directory, fsyncs it, renames it over
    ``path`` and fsyncs the directory. A full disk raises :class:`StorageError`
    and leaves the old file untouched.
    """
    path = Path(path)
    import tempfile  # only when a file is written: not on every command's start-up

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(
            _t(
                "could not write {path}: {strerror}; nothing was changed",
                path=path,
                strerror=exc.strerror,
            )
        ) from exc
