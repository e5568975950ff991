"""Reading a witness file: the checkpoint notes and read heads kept outside the database.

Separate from :mod:`._audit` because it is file input handling (bounded, regular
files only), not log logic.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError

#: Longest witness line read: a signed note (at most 1 MiB) as JSON, with room to spare.
MAX_WITNESS_LINE = 3 << 20


def read_witness(path: Path) -> list[str]:
    """The checkpoint notes in a witness file (JSON Lines, one ``{"note": ...}`` per line).

    Read line by line with a bound on each line, and only from a regular file:
    a witness path naming a device, a FIFO or a file with a gigantic line is
    refused (never read without end). Read heads (``{"head": ...}`` lines,
    :func:`read_witness_heads`) are skipped here.
    """
    return [str(doc["note"]) for doc in witness_lines(path) if "note" in doc]


def read_witness_heads(path: Path) -> list[dict[str, Any]]:
    """The read heads in a witness file: ``{"head": {...}}`` lines, in order.

    A reader appends one before decrypting (issue 12, attack 7): the log's size
    and last entry hash after their read entry, signed by the reader. Each is
    returned unverified (the caller checks the signature and the log).
    """
    heads = [doc["head"] for doc in witness_lines(path) if "head" in doc]
    if not all(isinstance(h, dict) for h in heads):
        raise IntegrityError(_t("witness file {path} holds a damaged read head", path=path))
    return heads


def witness_lines(path: Path) -> list[dict[str, Any]]:
    """Every line of a witness file as an object with exactly one of ``note``, ``head``."""
    try:
        # O_NOFOLLOW: a symlink planted at the witness path (to a copy the
        # insider controls) is refused, not read; O_NONBLOCK: a FIFO does not
        # block the open. The type is checked on the opened file (no race).
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IntegrityError(_t("the witness {path} is not a regular file", path=path)) from exc
        raise IntegrityError(
            _t("cannot read the witness file {path}: {strerror}", path=path, strerror=exc.strerror)
        ) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(_t("the witness {path} is not a regular file", path=path))
    fh = os.fdopen(fd, "rb")
    lines: list[dict[str, Any]] = []
    number = 0
    with fh:
        while True:
            try:
                line = fh.readline(MAX_WITNESS_LINE + 1)
            except OSError as exc:
                raise IntegrityError(
                    _t(
                        "cannot read the witness file {path}: {strerror}",
                        path=path,
                        strerror=exc.strerror,
                    )
                ) from exc
            if not line:
                return lines
            number += 1
            if not line.strip():
                continue
            try:
                if len(line) > MAX_WITNESS_LINE:
                    raise ValueError(_t("line too long"))
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise TypeError(_t("line"))
                if "head" in doc and "note" not in doc:
                    lines.append({"head": doc["head"]})
                    continue
                note = doc["note"]
                if not isinstance(note, str):
                    raise TypeError(_t("note"))
            except (ValueError, KeyError, TypeError, RecursionError) as exc:
                raise IntegrityError(
                    _t(
                        "witness file {path} line {number} is damaged (tampering or a partial "
                        "write)",
                        path=path,
                        number=number,
                    )
                ) from exc
            lines.append({"note": note})
