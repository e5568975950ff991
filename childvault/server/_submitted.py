"""Checks of what a client submits: log entries in its name (and the scan quota),
key slots and key renewals, verified before anything is stored.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from childvault._i18n import Message, _t
from childvault.keys import IntegrityError, KeySlots, UsageError, check_user_name
from childvault.keys._encoding import unb64
from childvault.server._host_common import MAX_SLOT, SERVER_ONLY, Refused, _Txn
from childvault.server._release_keys import verifies
from childvault.vault import _audit
from childvault.vault._action_roles import ROLE_ACTIONS, reserved_roles
from childvault.vault._backend import Backend
from childvault.vault._merkle import leaf_hash
from childvault.vault._registrations import PENDING
from childvault.vault._remote._methods import SCANNED_ACTIONS
from childvault.vault._statements import Envelope, TrustState
from childvault.vault._wire_messages import message_of

#: Entries of :data:`SCANNED_ACTIONS` a user may append through the server without
#: holding the action's role (:class:`ScanQuota`): at most this many at once ...
SCAN_BURST = 20
#: ... and then this many an hour.
SCAN_PER_HOUR = 20.0


#: Prefix of the server-only meta rows holding each user's :class:`ScanQuota` bucket.
QUOTA_KEY = SERVER_ONLY + "scan-quota/"


class ScanQuota:
    """How many entries of :data:`SCANNED_ACTIONS` each user may append without the
    action's role: a token bucket per user (issue 12, left alone in session 10).

    Every such entry is read by every later scan of its action (the notice register
    at each approval and read, the rights and incident registers, the settings),
    so appending many made every later scan slower for everyone. A role's holder
    logs their role's entries freely; anyone else may log such an entry for a
    reason (a denied attempt of a role's command, the link and closing of a
    subject report, their own registration or renewal request), a few at a time:
    :data:`SCAN_BURST` at once, then :data:`SCAN_PER_HOUR` an hour, so one user
    adds at most 480 a day to the scans (docs/server.md, "Limits").

    The buckets are rows of the database (``meta`` ``server/scan-quota/USER``:
    tokens and the wall-clock time they were counted), read and written in the
    transaction of the append they permit: every replica on one PostgreSQL
    database shares them (its writers are serialised by the write lock, so two
    replicas cannot both spend the last token), a restart does not refill them,
    and a rolled-back append gives its tokens back. Clients cannot write
    ``server/`` rows (``server_only``). ``clock`` (Unix seconds) is injectable
    so tests need not wait.
    """

    def __init__(
        self,
        *,
        burst: int = SCAN_BURST,
        per_hour: float = SCAN_PER_HOUR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.burst = int(burst)
        self.per_hour = float(per_hour)
        self.clock = clock

    def _stored(self, text: str | None, now: float) -> tuple[float, float]:
        if text is None:
            return float(self.burst), now
        try:
            tokens_text, at_text = text.split(" ")
            tokens, at = float(tokens_text), float(at_text)
        except ValueError:
            tokens, at = math.nan, math.nan
        if not (0.0 <= tokens <= self.burst and math.isfinite(at)):
            # Not a row this server wrote: an empty bucket from now (fails closed;
            # it refills as any other).
            return 0.0, now
        return tokens, at

    def take(self, db: Backend, user: str, count: int) -> bool:
        """Take ``count`` entries of ``user``'s quota in ``db``'s open transaction:
        all of them, or none (False)."""
        if count <= 0:
            return True
        now = self.clock()
        key = QUOTA_KEY + user
        tokens, at = self._stored(db.meta.get(key), now)
        # A clock behind the one that wrote the row (another replica's) adds nothing.
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.per_hour / 3600)
        taken = tokens >= count
        db.meta.set(key, f"{tokens - count if taken else tokens!r} {now!r}")
        return taken


def slots_call(keyslots: Path, txn: _Txn | None, method: str, a: list[Any]) -> Any:
    """``slots.users`` (names only) or ``slots.put`` (staged until commit)."""
    if method == "users":
        return KeySlots(keyslots).users()
    if txn is None:
        raise Refused(400, "malformed", _t("slots.put runs in a transaction"))
    if len(a) != 2 or not isinstance(a[0], str) or not (a[1] is None or isinstance(a[1], str)):
        raise Refused(400, "malformed", _t("slots.put takes a user name and a sealed slot"))
    name, sealed = a
    try:
        check_user_name(name)
        if sealed is not None:
            if len(sealed) > MAX_SLOT:
                raise UsageError(_t("the key slot is too large"))
            unb64(sealed)
    except (UsageError, ValueError) as exc:
        raise Refused(400, "malformed", _t("slots.put: {error}", error=message_of(exc))) from exc
    txn.slots[name] = sealed
    return None


def check_renewals(
    db: Backend, verified: TrustState, txn: _Txn, state: TrustState
) -> dict[str, str]:
    """Key renewals approved in ``txn``, checked against the verified state after it
    (``state``; ``verified``: the host's verified state before it).

    Each ``users.set_keys`` must name the keys the verified state holds
    for that user after the batch (only a verified ``user.renew``, signed
    by the old key, the new key and an admin, changes them). For each
    approval entry, the pending request it names must be the person's own
    ``user.renew`` request entry, signed by their key before the batch, whose
    statement names the keys the state now holds. Returns name -> the
    sealed slot that request carries: the only slot an admin may install
    for the renewed user (:func:`check_slots`). Anything else: 403
    ``binding``, nothing stored.
    """

    def refuse(name: str, why: Message) -> NoReturn:
        raise Refused(403, "binding", _t("the key renewal of {name}: {why}", name=name, why=why))

    for name, (enc, sign) in sorted(txn.keys_set.items()):
        after = state.users.get(name)
        if after is None or (after.enc_key, after.sign_key) != (enc, sign):
            refuse(name, _t("users.set_keys names keys no verified user.renew gave"))
    renewed: dict[str, str] = {}
    for name, seq in sorted(txn.renewals.items()):
        before = verified.users.get(name)
        after = state.users.get(name)
        found = db.audit.entry_at(seq)
        stored = db.statements.get(seq)
        if before is None or after is None or found is None or stored is None:
            refuse(name, _t("no pending request at entry {seq}", seq=seq))
        entry, digest = found
        obj = _audit.decode_entry(entry)
        detail = obj.get("detail")
        sig = db.audit.signatures(seq, seq).get(seq)
        if (
            not isinstance(detail, dict)
            or obj.get("actor") != name
            or obj.get("action") != "user.renew"
            or obj.get("outcome") != "ok"
            or detail.get("phase") != "request"
            or not isinstance(detail.get("slot"), str)
            or leaf_hash(entry) != digest
            or not isinstance(sig, bytes)
            or not verifies(before.sign_key, _audit.entry_message(digest), sig)
        ):
            refuse(name, _t("entry {seq} is not their own signed request", seq=seq))
        try:
            pending = Envelope.from_bytes(stored)
            statement = pending.statement()
        except (IntegrityError, ValueError) as exc:
            refuse(
                name,
                _t("the statement of entry {seq} is malformed ({error})", seq=seq, error=exc),
            )
        if (
            detail.get(PENDING) != pending.digest()
            or statement.get("user") != name
            or statement.get("sign_key") != after.sign_key.hex()
            or statement.get("enc_key") != after.enc_key.hex()
            or after.sign_key == before.sign_key
        ):
            refuse(
                name,
                _t("the request at entry {seq} names other keys than the approval", seq=seq),
            )
        renewed[name] = str(detail["slot"])
    return renewed


def check_slots(
    db: Backend,
    keyslots: Path,
    user: str,
    state: TrustState,
    slots: dict[str, str | None],
    renewed: dict[str, str] | None = None,
) -> None:
    """Each staged slot must be one the verified state (after this batch) allows.

    - one's own slot, while active;
    - an admin: a new slot for a user with a row and no slot yet who is not
      disabled (an enrolment; an officer's registration may still wait for an
      officer's countersignature), or removing a disabled user's slot;
    - an officer holding the current custodian key (verified): the slot of an
      active user (keys share, keys rotate), of a user still pending (rotation
      strips the custodian key from every slot), or removing a disabled one's;
    - an admin approving a key renewal: exactly the slot the person's own
      signed request carries, sealed by them to their new key (``renewed``,
      :func:`check_renewals`).

    Anything else is refused and nothing of the transaction is stored.
    ``keyslots``: the home's key-slot file (which users have a slot).
    """
    renewed = renewed or {}
    have = set(KeySlots(keyslots).users())
    me = state.users.get(user)
    roles = set(me.roles) if me is not None and me.active else set()
    current = state.current_custodian()
    holder = "officer" in roles and current is not None and user in state.active_holders(current[0])
    for name, sealed in sorted(slots.items()):
        active = state.is_active(name)
        if sealed is None:
            ok = ("admin" in roles or holder) and not active
        elif name in renewed:
            ok = "admin" in roles and active and sealed == renewed[name]
        elif name == user:
            ok = active
        else:
            pending = name not in state.users and db.users.get(name) is not None
            ok = (holder and (active or (pending and name in have))) or (
                "admin" in roles and name not in have and (active or pending)
            )
        if not ok:
            raise Refused(
                403,
                "binding",
                _t(
                    "slots.put: {user} may not write the key slot of {name}",
                    user=user,
                    name=name,
                ),
            )


def store_slots(keyslots: Path, vault_id: str, slots: dict[str, str | None]) -> None:
    """Write checked slots into the home's key-slot file (before the database commits:
    a failure here rolls the transaction back)."""
    file = KeySlots(keyslots)
    for name, sealed in sorted(slots.items()):
        file.install(name, vault_id, sealed)


def check_entries(
    db: Backend,
    state: TrustState,
    roles: frozenset[str],
    quota: ScanQuota,
    user: str,
    rows: Any,
    checked: set[tuple[bytes, bytes, bytes]],
    canonical: set[bytes],
) -> list[dict[str, Any]]:
    """Each row: in ``user``'s name, signed by their verified key (or in a run
    of theirs closed by their signature in these rows), linked to the head.

    Each verified (key, signed message, signature) is added to ``checked``, each
    entry found canonical to ``canonical``; the reads the rows log are noted once
    they are stored (:func:`~childvault.server._bindings.note_done`).
    Returns each row's decoded entry, in order. ``state``: the host's verified
    trust state; ``roles``: the caller's roles in it; ``quota``: the host's
    :class:`ScanQuota`.
    """
    key = state.users[user].sign_key
    seq, prev = db.audit.head()
    if not isinstance(rows, list | tuple) or not rows:
        raise Refused(400, "malformed", _t("audit.append needs rows"))
    decoded: list[dict[str, Any]] = []
    runs, last = _audit.RunCheck(), seq + len(rows) - 1
    for row in rows:
        try:
            r_seq, entry, digest, sig = row
            obj = _audit.decode_entry(entry)
        except (TypeError, ValueError) as exc:
            raise Refused(400, "malformed", _t("a log row is malformed")) from exc
        if r_seq != seq or obj.get("seq") != seq:
            raise Refused(
                409,
                "unverified",
                _t("log entry {r_seq} is not the next ({seq})", r_seq=r_seq, seq=seq),
            )
        if obj.get("prev") != (None if prev is None else prev.hex()):
            raise Refused(
                409, "unverified", _t("log entry {seq} does not link to the head", seq=seq)
            )
        if leaf_hash(entry) != digest:
            raise Refused(409, "unverified", _t("log entry {seq} does not match its hash", seq=seq))
        if not _audit.is_canonical(obj, entry):
            # The library writes canonical bytes only. A member written twice
            # reads as its first value in SQLite's index columns (action, ids,
            # recipient) but as its last everywhere else (review RV9-6).
            raise Refused(
                409, "unverified", _t("log entry {seq} is not in canonical form", seq=seq)
            )
        canonical.add(entry)
        if obj.get("actor") != user:
            raise Refused(403, "binding", _t("log entry {seq} is in another's name", seq=seq))
        # The run rule (docs/trust.md): unsigned entries wait for the signature
        # closing their run, which this call must hold (its last row at the latest).
        action, bad, good = obj.get("action"), None, None
        if sig is None:
            bad = runs.unsigned(seq, user, key, action)
        else:
            message = runs.message(seq, user, key, action, digest)
            if not isinstance(sig, bytes) or not verifies(key, message, sig):
                bad = runs.end()
                bad = seq if bad is None else bad
            else:
                bad, good = runs.signed(seq, user, key, action), (key, message, sig)
        if bad is None and r_seq == last:
            bad = runs.end()  # the call's last run must be closed in the call
        if bad is not None:
            raise Refused(
                403,
                "unverified",
                _t("log entry {seq} is not signed by {user}", seq=bad, user=user),
            )
        reserved = reserved_roles(obj)
        if reserved is not None and not reserved & roles:
            # Signed and in their name, yet an action of a role they do not
            # hold: its readers would take it as the role's (review RV2-2).
            raise Refused(
                403,
                "role",
                _t(
                    "log entry {seq}: {action} is logged by a user with the role {roles}",
                    seq=seq,
                    action=str(obj.get("action")),
                    roles=" / ".join(sorted(reserved)),
                ),
            )
        if good is not None:
            checked.add(good)
        decoded.append(obj)
        seq, prev = seq + 1, digest
    take_scan_quota(db, quota, user, roles, decoded)
    return decoded


def take_scan_quota(
    db: Backend,
    quota: ScanQuota,
    user: str,
    roles: frozenset[str],
    decoded: Sequence[dict[str, Any]],
) -> None:
    """Refuse (429 ``rate_limited``) rows holding more entries of a scanned action
    that ``user`` logs without its role than their :class:`ScanQuota` has left;
    nothing of the call is stored."""
    count = sum(
        1
        for obj in decoded
        if obj.get("action") in SCANNED_ACTIONS
        and not ROLE_ACTIONS.get(str(obj.get("action")), frozenset()) & roles
    )
    if not quota.take(db, user, count):
        raise Refused(
            429,
            "rate_limited",
            _t(
                "{user} logged more than {burst} register, setting or user entries of "
                "another role's actions in a short time (at most {per_hour:g} an hour): "
                "try again later",
                user=user,
                burst=quota.burst,
                per_hour=quota.per_hour,
            ),
        )
