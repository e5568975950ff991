"""``childvault backup``: a consistent copy of a vault home while it is in use.

The database is copied with SQLite's online backup API (one read snapshot, so
writers in other processes neither block it for long nor tear it); the key
slots, config, schema and identity files are copied as they are (each is
replaced atomically when it changes); the witness last, so it is never older
than the database copy. Restoring is described in docs/operators.md: put the
files back, then ``childvault audit rebaseline --from-backup`` if the witness
has moved on since.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import StorageError, UsageError
from childvault.vault._session import Session

#: Name of the witness copy inside a backup directory.
WITNESS_COPY = "witness.jsonl"


def backup(session: Session, out: Path) -> dict[str, Any]:
    """Copy the vault of ``session`` into the new or empty directory ``out``."""
    backend = session.db
    copy = getattr(backend, "backup_to", None)
    if copy is None:
        raise UsageError(
            _t(
                "the {kind} backend has no online backup: use its own tools",
                kind=type(backend).__name__,
            )
        )
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise UsageError(_t("{out} is not empty: back up into a new directory", out=out))
        os.chmod(out, 0o700)
    except OSError as exc:
        raise StorageError(
            _t(
                "cannot create the backup directory {out}: {strerror}",
                out=out,
                strerror=exc.strerror,
            )
        ) from exc
    home = session.home
    copy(out / home.database.name, session.secrets["db"])
    files = [out / home.database.name]
    for src in (home.keyslots, home.config, home.schema):
        files.append(_copy_file(src, out / src.name))
    if home.identities.is_dir():
        (out / home.identities.name).mkdir(mode=0o700)
        for src in sorted(home.identities.iterdir()):
            if stat.S_ISREG(src.lstat().st_mode):
                files.append(_copy_file(src, out / home.identities.name / src.name))
    witness = session.witness_path
    if witness.exists():
        files.append(_copy_file(witness, out / WITNESS_COPY))
    return {"backup": str(out), "files": [str(f.relative_to(out)) for f in files]}


def _copy_file(src: Path, dest: Path) -> Path:
    """Copy one regular file, private (0600); refuse symlinks and special files."""
    try:
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise StorageError(_t("{src} is not a regular file; not backed up", src=src))
            out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(out_fd, "wb") as target:
                shutil.copyfileobj(fh, target)
                target.flush()
                os.fsync(target.fileno())
    except OSError as exc:
        raise StorageError(
            _t("cannot back up {src}: {strerror}", src=src, strerror=exc.strerror)
        ) from exc
    return dest
