"""The witness side of a commit: HTTP witnesses cosign each checkpoint, and a
replica's own witness file catches up on the checkpoints stored through others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.server._witness import WitnessClient, WitnessFailed
from childvault.server._witnessfile import (
    WitnessRead,
    append_missing,
    append_notes,
    notes_digest,
    read_notes,
)
from childvault.vault import _note
from childvault.vault._backend import Backend
from childvault.vault._merkle import SubtreeHashes
from childvault.vault._session import log_origin, signer_name
from childvault.vault._statements import TrustState
from childvault.vault._wire_messages import message_of

logger = logging.getLogger("childvault.server")
#: What a catch-up read of the checkpoints table: (largest id read, how many rows
#: had an id up to it, that row's note).
Mark = tuple[int, int, str]
#: How many notes the witness file held after a catch-up, and their digest.
Held = tuple[int, bytes]


def cosign_and_append(
    witnesses: Sequence[WitnessClient],
    path: Path,
    note: str,
    proof_of: Callable[[int, str], list[bytes]],
) -> str | None:
    """Have the HTTP witnesses cosign ``note``, then append it to the witness file.

    Returns why a witness did not cosign (None when all did, or none is
    configured). The note goes into the file either way: it is the log's
    own signed checkpoint, and a witness being down must not lose it.
    """
    failure = None
    signed = note

    def proof(old: int) -> list[bytes]:
        return proof_of(old, signed)

    for client in witnesses:
        try:
            note = client.cosign(note, proof)
        except (WitnessFailed, IntegrityError, ValueError) as exc:
            failure = message_of(exc)
            logger.error("witness %s did not cosign a checkpoint: %s", client.url, exc)
    try:
        append_notes(path, [note])
    except OSError:
        # The officer's client fails closed when its own witness step fails;
        # here the row is committed already, so it is logged loudly.
        logger.exception("could not append a checkpoint to the witness %s", path)
    return failure


def consistency_proof(subtrees: SubtreeHashes, old: int, note: str) -> list[bytes]:
    """The RFC 6962 consistency proof from ``old`` entries to the tree ``note`` signs.

    From the cached subtree hashes (:class:`SubtreeHashes`, on the DB
    thread): the leaves committed since the last proof are read once, then
    O(log n) hashes and at most a few blocks of leaves at the edges. The
    witness checks the proof against the root it holds, so a wrong one
    (say the log rewritten under the cache) only costs a refusal.
    """
    body, _ = _note.parse_note(note)
    size = _note.Checkpoint.parse_body(body).size
    return subtrees.consistency_proof(old, size)


def leaf_hashes(db: Backend, lo: int, hi: int) -> list[bytes]:
    """The committed log's leaf hashes ``lo`` to ``hi`` (exclusive; fewer if it is shorter)."""
    leaves: list[bytes] = []
    for rows in db.audit.pages(lo, batch=min(max(hi - lo, 1), 5000)):
        for row in rows:
            seq, _, digest = db.audit.row(row)
            if seq >= hi:
                return leaves
            leaves.append(digest)
        if len(leaves) >= hi - lo:
            break
    return leaves


def catch_up(
    db: Backend,
    state: TrustState,
    vault_id: str,
    path: Path,
    mark: Mark | None,
    held: Held | None,
) -> tuple[WitnessRead, Mark | None, Held | None]:
    """(DB thread) Append to this replica's own witness the stored checkpoints it
    lacks: those committed through the other replicas of the database.

    With a witness file per replica each one would otherwise hold only the
    checkpoints of the approvals it served, and a client verifying through
    it would find the log's remembered witnessed size out of its reach.
    Each note is verified first against the key of its signer in the
    verified trust state and must name this log; one that does not is left
    out and logged (verification then names it through the other witness).

    Only the rows above the largest id read before are read (a primary-key
    range), unless the rows up to it are no longer what was read (their
    count or the last one's note changed: a row slipped in below, the table
    was restored) or the witness file no longer begins with the notes it
    held (cut short, replaced): then all once more. docs/decisions.md "A
    connection reads only the checkpoints its witness has not seen".

    ``mark`` and ``held``: what the last catch-up read of the table and found in
    the file (:class:`~childvault.server.VaultHost` keeps them). Returns the
    witness file's notes after the catch-up (the file is read once, for the
    check, the append and the describe answer) and the mark and held record
    to keep (those given, when nothing was appended).
    """
    kept = mark, held
    seen = read_notes(path)
    origin = log_origin(vault_id)
    if mark is not None and db.checkpoints.through(mark[0]) != mark[1:]:
        logger.warning("the stored checkpoints up to id %d changed: reading them all", mark[0])
        mark = None
    if mark is not None and (
        held is None or len(seen.notes) < held[0] or notes_digest(seen.notes[: held[0]]) != held[1]
    ):
        # Cut short or replaced since: refilled from every verified row, as
        # a catch-up always did (docs/scale.md).
        logger.warning("the witness file lacks checkpoints it held: reading them all")
        mark = None
    if mark is None:
        rows = sorted(db.checkpoints.all(), key=lambda r: r.id)
    else:
        rows = db.checkpoints.after(mark[0])
    if not rows:
        return seen, kept[0], kept[1]
    notes: list[str] = []
    for row in rows:
        found = state.users.get(row.signer)
        try:
            if found is None:
                raise IntegrityError(_t("{signer!r} is not a verified user", signer=row.signer))
            name = signer_name(vault_id, row.signer)
            cp, _ = _note.verify_note(row.note, {name: found.sign_key})
            if cp.origin != origin:
                raise IntegrityError(_t("it names another log"))
        except IntegrityError as exc:
            logger.warning("stored checkpoint %d is not copied to the witness: %s", row.id, exc)
            continue
        notes.append(row.note)
    try:
        added, after = append_missing(path, notes, seen)
    except OSError:
        # The mark stays: the next catch-up reads these rows again.
        logger.exception("could not append checkpoints to the witness %s", path)
        return seen, kept[0], kept[1]
    # Counted from the rows read, not asked again: a row inserted below the
    # mark meanwhile makes the next count differ, so it is read then.
    count = len(rows) + (0 if mark is None else mark[1])
    new_mark = (rows[-1].id, count, rows[-1].note)
    # The whole file as it now begins, not only the notes copied: it holds
    # every verified note up to the mark (append_missing kept those already
    # there), and anything that only appends keeps this prefix.
    new_held = (len(after.notes), notes_digest(after.notes))
    logger.info(
        "witness catch-up: %d stored checkpoint(s) read (%s), %d copied",
        len(rows),
        "all" if mark is None else f"after id {mark[0]}",
        added,
    )
    return after, new_mark, new_held
