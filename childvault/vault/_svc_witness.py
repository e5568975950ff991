"""The witness of the audit log: its file of checkpoint notes and read heads, the
signed rows remembering how far it reached, and the checks that it was kept.

Kept apart from :mod:`._svc_audit` (signing, verifying and reading the log),
which reads and appends the witness through :class:`WitnessFile`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Callable
from datetime import datetime
from typing import Any

from childvault._i18n import _t
from childvault.keys import IntegrityError, PublicIdentity, StorageError
from childvault.keys._encoding import b64, unb64
from childvault.vault import _audit, _note
from childvault.vault._session import Session, log_origin
from childvault.vault._time import iso


class WitnessFile:
    """The witness file of a session's vault and the remembered reach of it."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def remember_witnessed(
        self, key: str, size: int, *, key_of: Callable[[str], bytes | None] | None = None
    ) -> None:
        """Raise the remembered witness reach ``key`` to ``size``, signed by the
        acting user (docs/trust.md): an unsigned or forged row is replaced, since
        this append itself shows the witness reaches ``size``. ``key_of``: how
        the row's signer's key is found (default :meth:`head_key`)."""
        with self.s.db.transaction():
            raw = self.s.db.meta.get(key)
            known = _witnessed_row(raw, key, self.s.vault_id, key_of or self.head_key)
            if isinstance(known, int) and size <= known:
                return
            fact = {"vault": self.s.vault_id, "key": key, "size": size, "signer": self.s.user}
            sig = self.s.me.sign(_WITNESSED_DOMAIN + _audit.canonical(fact))
            row = {"size": size, "signer": self.s.user, "sig": b64(sig)}
            self.s.db.meta.set(key, json.dumps(row, sort_keys=True))

    def witnessed(self, key: str) -> int:
        """How far the witness is known to reach (``key``), verified before use.

        The row must be the signed statement :meth:`remember_witnessed` wrote:
        signed by a verified user (their key from the trust state) over this
        vault, this key and this size. An edited row (lowered, to hide a witness
        cut short; or raised) is refused and logged. Without an anchor the
        session verifies nothing and reads the row as before.
        """
        raw = self.s.db.meta.get(key)
        found = _witnessed_row(raw, key, self.s.vault_id, self.head_key)
        if isinstance(found, int):
            return found
        if self.s.trust() is None:
            return int(raw) if raw is not None and raw.strip().isdigit() else 0
        self.s.distrust(
            "audit.verify",
            _t(
                "the {key} row ({why}) is not signed by a verified user; run "
                "`childvault audit checkpoint` once the witness is confirmed complete",
                key=key,
                why=found,
            ),
            self.s.now(),
        )

    def append_witness(self, line: str) -> None:
        """Append ``line`` to the witness file and sync it (fails closed: :class:`StorageError`)."""
        path = self.s.witness_path
        try:
            # Created private like every other file of the vault (0600).
            # O_NOFOLLOW: a symlink planted at the witness path is refused.
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise StorageError(
                _t(
                    "could not append the checkpoint to the witness file {path}: {strerror}",
                    path=path,
                    strerror=exc.strerror,
                )
            ) from exc

    # -- read heads (issue 12, attack 7) ---------------------------------------

    def witness_read(self, moment: datetime) -> None:
        """Append a read head to the witness: the log's size and last entry hash now
        (after the caller's committed read entry), signed by the reader.

        Called by a read before it decrypts, so removing the read entry from
        the tail of the log (and re-hashing what follows) leaves the log shorter
        than, or different from, a head the witness holds: the next approval,
        ``audit verify`` and ``doctor`` notice (:meth:`check_read_heads`).
        Fails closed (:class:`StorageError`): the caller decrypts nothing.
        In server mode the server logs the read before it releases the key and
        witnesses its own log, so there is nothing for the client to append.
        """
        if getattr(self.s.db, "witnessed_by_server", False):
            return
        size, last = self.s.db.audit.head()
        if last is None:
            return
        head = {
            "vault": self.s.vault_id,
            "size": size,
            "hash": last.hex(),
            "signer": self.s.user,
            "at": iso(moment),
        }
        sig = self.s.me.sign(_head_message(head))
        line = {"head": {**head, "sig": b64(sig)}}
        self.append_witness(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n")
        self.remember_witnessed(WITNESSED_HEAD_KEY, size)

    def known_key(self, name: str) -> bytes | None:
        """The signing key of ``name`` in the trust state this session verified last,
        without reading the log again (:meth:`Session.known_trust`): for the
        witness reach raised inside a checkpoint's transaction, whose own
        entries moved the head. A key renewed since then only makes an existing
        row look unsigned, and it is then replaced by the checkpoint's own size,
        which no earlier checkpoint of this log exceeds."""
        state = self.s.known_trust()
        if state is not None:
            found = state.users.get(name)
            return None if found is None else found.sign_key
        return self.head_key(name)

    def head_key(self, name: str) -> bytes | None:
        """The signing key of ``name``: from the verified statements when the acting
        identity holds an anchor, else from the users table."""
        state = self.s.trust()
        if state is not None:
            found = state.users.get(name)
            return None if found is None else found.sign_key
        row = self.s.db.users.get(name)
        return None if row is None else row.sign_key

    def read_heads(self) -> list[dict[str, Any]]:
        """The witness's read heads that still bind the log (a restore note retires
        the heads before it that cover more entries, as it retires notes)."""
        signers = self.s.signers()
        origin = log_origin(self.s.vault_id)
        heads: list[dict[str, Any]] = []
        for doc in _audit.witness_lines(self.s.witness_path):
            if "head" in doc:
                heads.append(doc["head"])
                continue
            # Only a note whose body carries a restore line can retire heads, and
            # verifying keeps the body: the others are not verified here.
            claim = _note_claim(str(doc["note"]))
            if claim is None or not claim[1]:
                continue
            with contextlib.suppress(IntegrityError):
                cp, _ = _note.verify_note(str(doc["note"]), signers)
                if cp.origin == origin and any(
                    e.startswith(RESTORE_EXTENSION) for e in cp.extensions
                ):
                    heads = [h for h in heads if _head_size(h) <= cp.size]
        return heads

    def check_read_heads(self, since: int = 0) -> int:
        """Refuse a log that no longer holds a read a reader witnessed (attack 7).

        Checks every read head of a log larger than ``since`` (approvals pass
        where their own verification resumed; ``audit verify`` passes 0) and the
        largest one: its signature by the reader, and that the log's entry at
        that position still has the witnessed hash (the chain then commits to
        every entry before it). Returns the largest witnessed size.
        """
        heads = self.read_heads()
        if not heads:
            return 0
        largest = max(heads, key=_head_size)
        for number, head in enumerate(heads, start=1):
            if head is not largest and _head_size(head) <= since:
                continue
            try:
                size, digest, signer, sig = _parse_head(head, self.s.vault_id)
            except (KeyError, TypeError, ValueError) as exc:
                raise IntegrityError(
                    _t("witness read head {number} is damaged", number=number)
                ) from exc
            key = self.head_key(signer)
            if key is None or not PublicIdentity(signer, b"\0" * 32, key).verify(
                _head_message({k: head[k] for k in head if k != "sig"}), sig
            ):
                raise IntegrityError(
                    _t(
                        "witness read head {number} is not signed by {signer!r}: check the "
                        "witness file",
                        number=number,
                        signer=signer,
                    )
                )
            at = self.s.db.audit.entry_at(size - 1)
            if at is None:
                raise IntegrityError(
                    _t(
                        "truncated: {signer} read with the log at {size} entries (witness read "
                        "head {number}), but entry {entry} is gone: entries were removed",
                        signer=signer,
                        size=size,
                        number=number,
                        entry=size - 1,
                    )
                )
            if at[1] != digest:
                raise IntegrityError(
                    _t(
                        "diverged: entry {entry} is not the one {signer} witnessed when reading "
                        "(witness read head {number}): the log was rewritten",
                        entry=size - 1,
                        signer=signer,
                        number=number,
                    )
                )
        return _head_size(largest)

    def witness_notes(self, *, since: int = 0) -> list[str]:
        """The witness notes that still bind the log (see :func:`effective_witness`);
        ``since``: without those of smaller trees (an approval's resumed check)."""
        return effective_witness(
            _audit.read_witness(self.s.witness_path),
            self.s.signers(),
            log_origin(self.s.vault_id),
            since=since,
        )

    def check_witness_kept(self) -> None:
        """Fail loudly when the database holds checkpoints the witness lacks.

        Stored checkpoints mean the witness was written; a witness that is
        missing or empty, or ends before the largest size it is known to have
        reached (remembered after each successful append), was moved aside,
        replaced or truncated: truncation detection would silently be off. (A
        checkpoint whose append failed is not counted: that failure was loud.)
        """
        stored = self.s.db.checkpoints.all()
        if not stored:
            return
        # The remembered sizes first, the file after: a writer appends to the
        # witness before it raises the remembered size, so reading in this
        # order never sees a size the file does not reach yet (a concurrent
        # append read the other way round was a false "shorter" alarm).
        reached = self.witnessed(WITNESSED_SIZE_KEY)
        heads = self.witnessed(WITNESSED_HEAD_KEY)
        path = self.s.witness_path
        sizes = [_note_size(n) for n in _audit.read_witness(path)]
        if not sizes:
            raise IntegrityError(
                _t(
                    "the witness file {path} is missing or empty but the database holds {n} "
                    "signed checkpoint(s): put the witness back (from its other media or "
                    "backup); truncation of the log cannot be detected without it",
                    path=path,
                    n=len(stored),
                )
            )
        raw_heads = _audit.read_witness_heads(path)
        if heads and max((_head_size(h) for h in raw_heads), default=0) < heads:
            raise IntegrityError(
                _t(
                    "the witness file {path} is shorter than before: it once held a read head of "
                    "{heads} entries and now ends before it: put the current witness back",
                    path=path,
                    heads=heads,
                )
            )
        if max(size or 0 for size in sizes) < reached:
            raise IntegrityError(
                _t(
                    "the witness file {path} is shorter than before: it once held a checkpoint "
                    "of {reached} entries and now ends before it (replaced with an older copy "
                    "or truncated): put the current witness back",
                    path=path,
                    reached=reached,
                )
            )


#: Meta key: the largest tree size the witness is known to have reached.
WITNESSED_SIZE_KEY = "witnessed_size"

#: Meta key: the largest log size a read head in the witness is known to have reached.
WITNESSED_HEAD_KEY = "witnessed_head_size"

_HEAD_DOMAIN = b"childvault/read-head/1\x00"

#: What a user signs when raising a remembered witness reach (``witnessed_size``).
_WITNESSED_DOMAIN = b"childvault/witnessed/1\x00"


def _witnessed_row(
    raw: str | None, key: str, vault_id: str, key_of: Callable[[str], bytes | None]
) -> int | str:
    """The size a signed witness-reach row states, or why it does not verify.

    ``raw`` is the ``meta`` value (absent: 0, nothing remembered yet);
    ``key_of`` gives a user's verified signing key. Returns the size (int)
    or a short reason (str).
    """
    if raw is None:
        return 0
    try:
        doc = json.loads(raw)
        size, signer, sig = doc["size"], doc["signer"], unb64(str(doc["sig"]))
    except (ValueError, TypeError, KeyError):
        return "not a signed statement"
    if set(doc) != {"size", "signer", "sig"}:
        return "not a signed statement"
    if (
        not isinstance(size, int)
        or isinstance(size, bool)
        or size < 0
        or not isinstance(signer, str)
    ):
        return "malformed"
    public = key_of(signer)
    fact = {"vault": vault_id, "key": key, "size": size, "signer": signer}
    if public is None or not PublicIdentity(signer, b"\0" * 32, public).verify(
        _WITNESSED_DOMAIN + _audit.canonical(fact), sig
    ):
        return f"signature of {signer!r} does not verify"
    return size


def _head_message(head: dict[str, Any]) -> bytes:
    """What a reader signs: a domain tag and the canonical head (without ``sig``)."""
    return _HEAD_DOMAIN + _audit.canonical(head)


def _head_size(head: dict[str, Any]) -> int:
    size = head.get("size") if isinstance(head, dict) else None
    return size if isinstance(size, int) and not isinstance(size, bool) else 0


def _parse_head(head: dict[str, Any], vault_id: str) -> tuple[int, bytes, str, bytes]:
    """(size, last entry hash, signer, signature) of a read head; ValueError if malformed."""
    if set(head) != {"vault", "size", "hash", "signer", "at", "sig"}:
        raise ValueError(_t("members"))
    if head["vault"] != vault_id:
        raise ValueError(_t("vault"))
    size = _head_size(head)
    digest = bytes.fromhex(str(head["hash"]))
    if not 1 <= size < 1 << 53 or len(digest) != 32 or not isinstance(head["signer"], str):
        raise ValueError(_t("size or hash"))
    return size, digest, head["signer"], unb64(str(head["sig"]))


#: First word of the extension line of a restore note (``audit rebaseline``).
RESTORE_EXTENSION = "childvault-restore:"


def _note_size(note: str) -> int | None:
    """The tree size a note claims (unverified), or None if it is not a checkpoint."""
    claim = _note_claim(note)
    return None if claim is None else claim[0]


@functools.lru_cache(maxsize=8192)
def _note_claim(note: str) -> tuple[int, bool] | None:
    """(tree size, whether it has a restore line) a note claims, unverified; None
    if it is not a checkpoint note. Remembered per note text (a pure function
    of it): every approval reads the witness's notes again."""
    try:
        body, _ = _note.parse_note(note)
        cp = _note.Checkpoint.parse_body(body)
    except IntegrityError:
        return None
    return cp.size, any(e.startswith(RESTORE_EXTENSION) for e in cp.extensions)


def effective_witness(
    notes: list[str], signers: dict[str, bytes], origin: str, *, since: int = 0
) -> list[str]:
    """The witness notes that still bind the log, in order.

    A restore note (a checkpoint of size N signed by a checkpoint signer of
    this vault, with a :data:`RESTORE_EXTENSION` line) retires the notes before
    it that cover more than N entries: those entries were lost with the
    restore, and the restore note itself records which. Every other note is
    kept; notes that do not verify are kept so verification names them.

    ``since`` (an approval resuming from its own checkpoint of that size):
    a note that claims a smaller tree and no restore line is left out
    unverified. A resumed verification would only check its signature; and
    retiring never brings a note back, so leaving it out changes nothing
    else (docs/decisions.md).
    """
    kept: list[tuple[int | None, str]] = []
    for note in notes:
        if since:
            claim = _note_claim(note)
            if claim is not None and claim[0] < since and not claim[1]:
                continue
        try:
            cp, _ = _note.verify_note(note, signers)
        except IntegrityError:
            kept.append((None, note))
            continue
        if cp.origin == origin and any(e.startswith(RESTORE_EXTENSION) for e in cp.extensions):
            kept = [(size, n) for size, n in kept if size is None or size <= cp.size]
        kept.append((cp.size, note))
    return [n for _, n in kept]
