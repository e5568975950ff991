"""A verifier's own signed saved points: its trust state and its known tree.

Separate from the replay that produces them: each row is signed by the
verifier's own key and loaded only if that signature verifies (an insider's
row is ignored, and the log is replayed or the tree built in full instead).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from childvault.keys import Identity, IntegrityError
from childvault.vault import _audit
from childvault.vault._backend import Backend
from childvault.vault._merkle import HASH_SIZE
from childvault.vault._statements import Anchor, TrustState

_STATE_DOMAIN = b"childvault/trust-state/1\x00"


@dataclass
class Verified:
    """A trust state verified over the log's first ``size`` entries (head: last hash)."""

    state: TrustState
    size: int
    head: bytes | None
    #: The size of the verifier's saved state in the database, when known (None:
    #: not known to be saved). Decides when to save again (:func:`verify_log`).
    saved_at: int | None = None


def _state_message(vault_id: str, size: int, head: bytes, state: bytes) -> bytes:
    # Signed over the head hash of the chain (it commits to every earlier entry,
    # as a Merkle root would) and the digest of the state.
    return _STATE_DOMAIN + _audit.canonical(
        {
            "vault": vault_id,
            "size": size,
            "head": head.hex(),
            "state": hashlib.sha256(state).hexdigest(),
        }
    )


def load_saved(db: Backend, verifier: Identity, anchor: Anchor) -> Verified | None:
    """The verifier's own saved state, if it is there and its signature verifies."""
    saved = db.statements.saved_state(verifier.name)
    if saved is None:
        return None
    size, head, raw, sig = saved
    message = _state_message(anchor.vault_id, size, head, raw)
    if not verifier.public.verify(message, sig):
        return None  # not ours (an insider's): replay everything instead
    at = db.audit.entry_at(size - 1) if size else None
    if at is None or at[1] != head:
        return None  # the log was rewritten below the saved point: replay everything
    try:
        return Verified(TrustState.from_bytes(raw, anchor), size, head, size)
    except IntegrityError:
        return None


def save_state(db: Backend, verifier: Identity, anchor: Anchor, verified: Verified) -> None:
    """Keep ``verified``, signed by the verifier's own key, for the next verification."""
    if verified.head is None:
        return
    raw = verified.state.to_bytes()
    sig = verifier.sign(_state_message(anchor.vault_id, verified.size, verified.head, raw))
    with db.transaction():
        db.statements.save_state(verifier.name, verified.size, verified.head, raw, sig)


#: Suffix of the ``trust_states`` key under which a verifier keeps its known
#: tree (``audit verify``'s Merkle frontier of the prefix it verified), beside
#: its trust state (``NAME``) and its record heads (``NAME#records``).
TREE_SUFFIX = "#tree"
_TREE_DOMAIN = b"childvault/verified-tree/1\x00"


def _tree_message(vault_id: str, user: str, size: int, state: bytes, checked: bytes) -> bytes:
    # Bound to the vault and the user (a row copied from another vault or user
    # does not verify) and to the prefix's last leaf hash, the end of ``state``:
    # the chain ending in it commits to every earlier entry.
    return _TREE_DOMAIN + _audit.canonical(
        {
            "vault": vault_id,
            "user": user,
            "size": size,
            "state": state.hex(),
            "checked": checked.hex(),
        }
    )


def load_tree(db: Backend, verifier: Identity, anchor: Anchor) -> _audit.KnownTree | None:
    """The verifier's own known tree (see :func:`save_tree`), if its signature verifies.

    Anything else (no row, a row that does not parse, another's signature)
    gives None: ``audit verify`` then builds the whole tree, as before.
    """
    saved = db.statements.saved_state(verifier.name + TREE_SUFFIX)
    if saved is None:
        return None
    size, head, raw, sig = saved
    # raw: the checked-checkpoints digest, then the frontier before the last
    # entry, then that entry's leaf hash (the head).
    if size < 1 or len(raw) < 2 * HASH_SIZE or raw[-HASH_SIZE:] != head:
        return None
    checked, state = raw[:HASH_SIZE], raw[HASH_SIZE:]
    message = _tree_message(anchor.vault_id, verifier.name, size, state, checked)
    if not verifier.public.verify(message, sig):
        return None  # not ours (an insider's row): build the whole tree
    return _audit.KnownTree(size, state, checked)


def save_tree(db: Backend, verifier: Identity, anchor: Anchor, report: _audit.VerifyReport) -> None:
    """Keep the Merkle frontier of the log ``report`` verified, signed by the verifier.

    The next ``audit verify`` by the same user then folds only the entries
    after it into the tree (it still checks the chain of every entry and that
    the prefix ends in the same leaf: docs/decisions.md).
    """
    if report.entries < 1 or len(report.resume_state) < HASH_SIZE or not report.checked:
        return
    state = report.resume_state
    message = _tree_message(anchor.vault_id, verifier.name, report.entries, state, report.checked)
    sig = verifier.sign(message)
    with db.transaction():
        db.statements.save_state(
            verifier.name + TREE_SUFFIX,
            report.entries,
            state[-HASH_SIZE:],
            report.checked + state,
            sig,
        )
