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
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from childvault.vault import _audit

__all__ = [
    "WitnessRead",
    "append_missing",
    "append_notes",
    "note_body",
    "notes_digest",
    "read_notes",
]

#: What identifies one state of a witness file: device, inode, size, mtime and
#: ctime in nanoseconds. An append changes the size; a rewrite in place the times.
Stamp = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class WitnessRead:
    """The checkpoint notes of a witness file as read once, and the file's
    :data:`Stamp` then (None: missing, or changed while it was read)."""

    notes: list[str]
    stamp: Stamp | None


def _stamp(info: os.stat_result) -> Stamp:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def read_notes(path: Path) -> WitnessRead:
    """The notes of the witness file at ``path`` (:func:`_audit.read_witness`),
    with its stamp if the file did not change while it was read."""
    try:
        before: Stamp | None = _stamp(os.stat(path))
    except OSError:
        before = None
    notes = _audit.read_witness(path)
    try:
        after: Stamp | None = _stamp(os.stat(path))
    except OSError:
        after = None
    return WitnessRead(notes, before if before == after else None)


def notes_digest(notes: Sequence[str]) -> bytes:
    """SHA-256 over the bodies of ``notes`` in order, each length-prefixed.

    A catch-up keeps this digest of the file's first notes, with their number,
    instead of every body it held: a file cut short, replaced or rewritten
    before that point no longer gives it (docs/decisions.md).
    """
    h = hashlib.sha256()
    for note in notes:
        body = note_body(note).encode("utf-8")
        h.update(len(body).to_bytes(8, "big"))
        h.update(body)
    return h.digest()


def note_body(note: str) -> str:
    """The signed text of a checkpoint note, without its signature lines.

    Two copies of one checkpoint compare equal by body even if one carries
    more signatures (a witness's cosignature) than the other.
    """
    return note.split("\n\n", 1)[0]


def append_notes(path: Path, notes: Iterable[str]) -> int:
    """Append ``notes`` as ``{"note": ...}`` lines to the witness file at ``path``.

    Created with mode 0600 if missing; a symlink at ``path`` is refused
    (``O_NOFOLLOW``). Returns how many were written. Raises ``OSError`` (the
    caller decides whether that is fatal). :func:`append_missing` leaves out
    the notes the file already holds.
    """
    wanted = list(notes)
    if not wanted:
        return 0
    return len(_append(path, wanted, seen=None)[0])


def append_missing(path: Path, notes: Sequence[str], seen: WitnessRead) -> tuple[int, WitnessRead]:
    """:func:`append_notes` of the ``notes`` whose body the file does not hold yet,
    given the file as read before (:func:`read_notes`): it is not read again
    unless it changed since. The file is checked under the append's lock, so
    two writers catching up at once do not both add a note.

    Returns how many notes were written and the file's notes after the append
    (with its stamp then), so one read serves the caller's checks, the
    append and its answer.
    """
    if not notes:
        return 0, seen
    written, present, stamp = _append(path, list(notes), seen=seen)
    return len(written), WitnessRead(present + written, stamp)


def _append(
    path: Path, wanted: list[str], *, seen: WitnessRead | None
) -> tuple[list[str], list[str], Stamp]:
    """Append under the lock: (notes written, the file's notes before them (empty
    without ``seen``), the file's stamp after). With ``seen`` (a catch-up), the
    notes the file holds are left out."""
    present: list[str] = []
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if seen is not None:
            # The read the caller made still holds if the file is as it was
            # then (a writer appending meanwhile changed its size); else it
            # is read again here, under the lock.
            if seen.stamp is not None and _stamp(os.fstat(fd)) == seen.stamp:
                present = seen.notes
            else:
                present = _audit.read_witness(path)
            held = {note_body(n) for n in present}
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
        stamp = _stamp(os.fstat(fd))
    finally:
        os.close(fd)  # closing releases the lock
    return wanted, present, stamp
