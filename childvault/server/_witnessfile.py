"""Appending checkpoint notes to a witness file that several processes may write.

Two ``childvault serve`` replicas on one PostgreSQL database may be given one
witness file (the home's configured one, on shared media) or each a file of
their own (``serve --witness-file``, issue 17). Either way an append must never
interleave with another writer's: each batch of lines is written by one
``write(2)`` loop while the writer holds an exclusive ``flock`` on the file, so
a reader (``audit verify``) sees whole lines only. The lock is advisory: every
writer in this package takes it (the library's own append writes one line with
one ``write(2)`` on an ``O_APPEND`` descriptor, which Linux also keeps whole).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable
from pathlib import Path

from childvault.vault import _audit

__all__ = ["append_notes", "note_body"]


def note_body(note: str) -> str:
    """The signed text of a checkpoint note, without its signature lines.

    Two copies of one checkpoint compare equal by body even if one carries
    more signatures (a witness's cosignature) than the other.
    """
    return note.split("\n\n", 1)[0]


def append_notes(path: Path, notes: Iterable[str], *, skip_present: bool = False) -> int:
    """Append ``notes`` as ``{"note": ...}`` lines to the witness file at ``path``.

    Created with mode 0600 if missing; a symlink at ``path`` is refused
    (``O_NOFOLLOW``). With ``skip_present``, notes whose body the file already
    holds are left out; the file is read under the same lock, so two writers
    catching up at once do not both add a note. Returns how many were written.
    Raises ``OSError`` (the caller decides whether that is fatal).
    """
    wanted = list(notes)
    if not wanted:
        return 0
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if skip_present:
            held = {note_body(n) for n in _audit.read_witness(path)}
            fresh = []
            for note in wanted:
                if note_body(note) not in held:
                    held.add(note_body(note))
                    fresh.append(note)
            wanted = fresh
        data = b"".join(
            (json.dumps({"note": note}, ensure_ascii=False) + "\n").encode("utf-8")
            for note in wanted
        )
        view = memoryview(data)
        while view:
            # A short write is continued under the same lock: no other writer's
            # line can land between the pieces.
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return len(wanted)
