"""What an appending transaction knows of the audit log without asking the server:
the log as the trust sync read it followed by the rows the transaction appended,
and the size a stored checkpoint claims. Plain functions of what the
transaction holds (:mod:`._txn` keeps that state and calls them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.vault._note import Checkpoint, parse_note
from childvault.vault._remote._codec import encode
from childvault.vault._remote._refusals import _Moved
from childvault.vault._remote._repos import PAGE_MAX


def own_log_read(
    held: Any,
    own_rows: list[tuple[int, bytes, bytes]] | None,
    repo: str,
    method: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
) -> Any:
    """In an appending transaction, ``repo.method(*args, **kwargs)`` answered from
    what was read before it (``held``: the trust sync's tail) and ``own_rows``,
    the rows it appended (:meth:`~childvault.vault._remote.RemoteBackend._own_log_read`)."""
    if not isinstance(held, tuple) or own_rows is None or repo != "audit":
        return None
    start, rows, _, complete = held
    log = [(int(r[0]), r[1], r[2]) for r in rows] + own_rows
    if not complete or not log or [r[0] for r in log] != list(range(start, start + len(log))):
        return None
    end = log[-1][0] + 1
    if (repo, method) == ("audit", "head") and not args and not kwargs:
        return encode((end, log[-1][2]))
    if not (len(args) == 1 and type(args[0]) is int and args[0] >= start):
        return None
    at = args[0]
    if method == "entry_at" and not kwargs and at < end:
        return encode((log[at - start][1], log[at - start][2]))
    if method == "page" and kwargs == {"batch": PAGE_MAX} and end - at <= PAGE_MAX:
        return encode([list(r) for r in log[at - start :]])
    return None


def check_predicted(predicted: Any, stored: Sequence[Any]) -> None:
    """Raise :class:`_Moved` if a stored checkpoint covers more entries than the
    head an appending transaction predicted (``predicted``, its size).

    The transaction's log is the trust sync's tail, then its own entries
    linked to that head. A checkpoint stored over a longer log was read
    later than that tail (on replicas the reads of one answer, or two
    answers of one generation, may straddle another replica's commit):
    compared with the predicted entries it reads as "diverged" though the
    stored log is sound. So the prediction is dropped and the transaction
    runs again reading the log from the server, which compares every
    checkpoint with the stored entries exactly as before (a forged size
    only costs that second run)."""
    for row in stored:
        size = getattr(row, "size", None)
        if isinstance(row, tuple | list) and row and isinstance(row[0], str):
            size = claimed_size(row[0])  # latest_by: (note, resume state)
        if type(predicted) is int and type(size) is int and size > predicted:
            raise _Moved(_t("the audit log moved since it was read: nothing was stored"))


def claimed_size(note: str) -> int | None:
    """The tree size a checkpoint note claims (unverified: it only decides whether
    to read the log again), or None if it is not one."""
    try:
        return Checkpoint.parse_body(parse_note(note)[0]).size
    except IntegrityError:
        return None
