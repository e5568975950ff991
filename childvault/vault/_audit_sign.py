"""Who signs which audit entries: the signed messages and the run rule (docs/trust.md).

Separate from :mod:`._audit` because the writer (:func:`._audit.append`), the
verifiers and the server's key release all apply the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from childvault._i18n import _t
from childvault.keys import Identity


def signing_function(signer: Any) -> Callable[[bytes], bytes]:
    """``signer.sign``, through libsodium directly when ``signer`` is an unlocked
    :class:`~childvault.keys.Identity` (exactly that class: an agent's identity
    keeps its key elsewhere and signs through the agent).

    Ed25519 signatures are deterministic, so the bytes are those of
    ``signer.sign`` (tested). Why: PyNaCl's ``SigningKey.sign`` builds a
    ``SignedMessage`` and checks its arguments in Python, about a quarter of
    each of the two signatures an imported record costs. The expanded key
    lives only as long as the returned function (one batch of an import).
    """
    if type(signer) is not Identity:
        return signer.sign  # type: ignore[no-any-return]  # a Signer: sign(bytes) -> bytes
    seed = signer.signing_seed()
    public = _ffi.new("unsigned char[]", 32)
    secret = _ffi.new("unsigned char[]", 64)
    if _lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
        raise RuntimeError(_t("Ed25519 key expansion failed"))
    if bytes(_ffi.buffer(public)) != signer.public.signing_key:
        # Never sign with a key that is not the identity's published one.
        return signer.sign
    new, sign, buffer, null = _ffi.new, _lib.crypto_sign, _ffi.buffer, _ffi.NULL

    def detached(message: bytes) -> bytes:
        if not isinstance(message, bytes):
            raise TypeError(_t("a signed message must be bytes"))
        out = new("unsigned char[]", len(message) + 64)
        if sign(out, null, message, len(message), secret) != 0:
            raise RuntimeError(_t("Ed25519 signing failed"))
        # libsodium's combined form is signature || message.
        return bytes(buffer(out, 64))

    return detached


def entry_message(digest: bytes) -> bytes:
    """What an entry's actor signs: a domain tag and the entry's hash."""
    return b"childvault/entry/1\x00" + digest


def run_message(first: int, digest: bytes) -> bytes:
    """What an actor signs to close a run of two or more of their consecutive
    entries (``first`` to the entry of ``digest``, appended in one call): a
    domain tag, the run's first sequence number and its last entry's hash.

    The hash commits to every earlier entry through the chain; ``first`` says
    where the actor's run begins, so entries someone else wrote in the actor's
    name just before the run are not covered (docs/decisions.md).
    """
    return _RUN_DOMAIN + first.to_bytes(8, "big") + digest


_RUN_DOMAIN = b"childvault/run/1\x00"

#: Actions whose entries always carry their own signature (``entry_message``),
#: never covered by a run's closing one: they change who holds which key or
#: role (a key changed inside a run would leave its earlier entries judged by
#: another key), decide who may read what, or are read one entry at a time
#: by the key release and the server's renewal check (docs/decisions.md).
SIGN_ALONE = frozenset(
    {
        "vault.init",
        "vault.upgrade",
        "vault.decommission",
        "user.add",
        "user.invite",
        "user.renew",
        "user.countersign",
        "user.disable",
        "custodian.create",
        "custodian.share",
        "keys.rotate",
        "trust.refuse",
        "setting.set",
        "request.create",
        "request.approve",
        "request.deny",
        "request.cosign",
        "grant.revoke",
        # Counted one entry at a time by the key release (a grant's used reads).
        "grant.read",
        "consent.withdraw",
        "consent.add_purpose",
        "consent.renew",
        "audit.checkpoint",
        "audit.rebaseline",
    }
)


@dataclass
class RunCheck:
    """The run rule, applied to one actor's entries in log order (docs/trust.md).

    Feed every entry in order: :meth:`unsigned` for an entry in the name of a
    user whose signature is required but which has none, :meth:`signed` for
    one that has a signature, :meth:`other` for any other entry (it ends a
    run). Each returns the sequence number of the first entry refused, or None.
    :meth:`end` must come last: a run with no closing signature is refused.
    """

    #: The open run: (seq, actor, key) of each unsigned entry, oldest first.
    pending: list[tuple[int, str, bytes]] = field(default_factory=list)

    def unsigned(self, seq: int, actor: str, key: bytes, action: object) -> int | None:
        """An unsigned entry of ``actor`` (key ``key`` at that point): opens or extends a run."""
        if action in SIGN_ALONE:
            return self.pending[0][0] if self.pending else seq
        if self.pending and self.pending[-1][1:] != (actor, key):
            return self.pending[0][0]  # a run broken by another actor (or key)
        self.pending.append((seq, actor, key))
        return None

    def message(self, seq: int, actor: str, key: bytes, action: object, digest: bytes) -> bytes:
        """What the signature of entry ``seq`` must cover (call before :meth:`signed`):
        :func:`run_message` when it closes an open run, else :func:`entry_message`."""
        if self.pending and action not in SIGN_ALONE:
            return run_message(self.pending[0][0], digest)
        return entry_message(digest)

    def signed(self, seq: int, actor: str, key: bytes, action: object) -> int | None:
        """A signed entry (its signature verified by the caller over :meth:`message`)."""
        if not self.pending:
            return None
        first = self.pending[0][0]
        ok = action not in SIGN_ALONE and self.pending[-1][1:] == (actor, key)
        self.pending.clear()
        return None if ok else first

    def other(self) -> int | None:
        """An entry that is not checked (no registered actor yet): it ends any run."""
        return self.end()

    def end(self) -> int | None:
        """The log's end (or a page's, for a check of whole append calls)."""
        if not self.pending:
            return None
        first = self.pending[0][0]
        self.pending.clear()
        return first
