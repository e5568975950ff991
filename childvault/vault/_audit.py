"""The tamper-evident audit log (docs/architecture.md, "Audit log").

Each entry is the RFC 8785 canonical JSON of
``{seq, ts, actor, action, outcome, records, fields, purpose, request, grant,
detail, prev}``, stored as the exact bytes that were hashed. ``prev`` is the
hex hash of the previous entry (``null`` for the first), and the entry hash
``SHA-256(0x00 || entry)`` is also the RFC 6962 leaf hash, so signed
checkpoints commit to the whole log through a Merkle root.

No child's data goes into an entry: record ids are random, fields are names,
and ``detail`` carries only bookkeeping chosen by the library.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import stat
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import rfc8785
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from childvault._i18n import _t
from childvault.keys import Identity, IntegrityError
from childvault.vault._backend import AuditRepo, LogSource
from childvault.vault._merkle import HASH_SIZE, Frontier, leaf_hash
from childvault.vault._note import Checkpoint, verify_note
from childvault.vault._time import iso, parse_iso

#: Every action the library logs; anything else is a programming error.
ACTIONS = frozenset(
    {
        "vault.init",
        "user.add",
        "custodian.create",
        "custodian.share",
        "user.countersign",
        "user.disable",
        "trust.refuse",
        "record.create",
        "record.list",
        "record.find",
        "record.correct",
        "record.delete",
        "request.create",
        "request.list",
        "request.approve",
        "request.deny",
        "grant.read",
        "grant.revoke",
        "audit.checkpoint",
        "audit.rebaseline",
        "audit.read",
        "consent.withdraw",
        "consent.add_purpose",
        "consent.renew",
        "retention.sweep",
        "export.anonymized",
        "report.subject",
        "report.incident",
        "keys.rotate",
        "vault.decommission",
        "vault.backup",
        "notice.publish",
        "vault.gc",
        # A record version re-signed by the officer who re-wrapped its keys (issue 12).
        "record.resign",
        # Enrolment by invite, key renewal and upgrades (issue 12).
        "user.invite",
        "user.renew",
        "vault.upgrade",
        # A signed vault setting (issues 12, 15: settings are statements, not meta rows).
        "setting.set",
    }
)
OUTCOMES = frozenset({"ok", "denied", "error"})

DetailValue = str | int | bool | None | list[str]


@dataclass(frozen=True)
class Event:
    """What happened, before it is given a sequence number, time and chain link."""

    actor: str
    action: str
    outcome: str = "ok"
    records: Sequence[str] = ()
    fields: Sequence[str] = ()
    purpose: str | None = None
    request: str | None = None
    grant: str | None = None
    detail: Mapping[str, DetailValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(_t("unknown audit action {action!r}", action=self.action))
        if self.outcome not in OUTCOMES:
            raise ValueError(_t("unknown audit outcome {outcome!r}", outcome=self.outcome))


def encode_entry(seq: int, ts: str, event: Event, prev: bytes | None) -> bytes:
    """The canonical bytes of one entry (what is stored and hashed)."""
    records, fields, detail = list(event.records), list(event.fields), dict(event.detail)
    # canonical()'s type check, member by member: only the detail can nest, and
    # one entry a record of an import passes through here (docs/benchmarks.md).
    # The lists' and the scalars' exact types are tested in C (set inclusion over
    # map(type, ...)), not by a generator a member.
    if (
        type(seq) is int
        and 0 <= seq <= _SAFE_INT
        and _ONLY_STR((type(ts), type(event.actor), type(event.action), type(event.outcome)))
        and _ONLY_STR(map(type, records))
        and _ONLY_STR(map(type, fields))
        and _STR_OR_NONE((type(event.purpose), type(event.request), type(event.grant)))
        and _plain(detail)
    ):
        # The members in RFC 8785's order (the keys sorted), each value through
        # the json module's own C string encoder (what the sorting encoder calls
        # for every string): the same bytes without building and sorting the
        # entry's dict (round 2 session 7; pinned by tests/test_statements_template.py
        # and the vectors).
        esc = _ESC
        text = "".join(
            (
                '{"action":',
                esc(event.action),
                ',"actor":',
                esc(event.actor),
                ',"detail":',
                _FAST_DUMPS(detail),
                ',"fields":[',
                ",".join(map(esc, fields)),
                '],"grant":',
                "null" if event.grant is None else esc(event.grant),
                ',"outcome":',
                esc(event.outcome),
                ',"prev":',
                "null" if prev is None else f'"{prev.hex()}"',
                ',"purpose":',
                "null" if event.purpose is None else esc(event.purpose),
                ',"records":[',
                ",".join(map(esc, records)),
                '],"request":',
                "null" if event.request is None else esc(event.request),
                ',"seq":',
                str(seq),
                ',"ts":',
                esc(ts),
                "}",
            )
        )
        try:
            return _without_nul(text.encode("utf-8"))
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 raises its own error
    obj: dict[str, Any] = {
        "seq": seq,
        "ts": ts,
        "actor": event.actor,
        "action": event.action,
        "outcome": event.outcome,
        "records": records,
        "fields": fields,
        "purpose": event.purpose,
        "request": event.request,
        "grant": event.grant,
        "detail": detail,
        "prev": None if prev is None else prev.hex(),
    }
    return _without_nul(canonical(obj))


def holds_nul(entry: bytes, obj: Any) -> bool:
    """Whether entry ``entry`` (``obj``, its parse) holds the character U+0000.

    PostgreSQL's ``jsonb`` refuses it, so its index columns (action, request,
    grant, recipient) are null for such an entry: every look-up through them
    would miss it, the transfers register included (review RV11-2). Canonical
    JSON writes it ``\\u0000``; only an entry holding that text is parsed for it.
    """
    return b"\\u0000" in entry and _nul_in(obj)


def _nul_in(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_nul_in(v) for v in value)
    if isinstance(value, dict):
        return any(_nul_in(k) or _nul_in(v) for k, v in value.items())
    return False


def _without_nul(entry: bytes) -> bytes:
    """``entry``, unless it holds U+0000 (:func:`holds_nul`): then ValueError, as
    for a lone surrogate, so nothing is logged that a verifier refuses."""
    if b"\\u0000" in entry and holds_nul(entry, json.loads(entry)):
        raise ValueError(_t("a log entry cannot hold the character U+0000"))
    return entry


_SAFE_INT = 2**53 - 1
#: Whether every type of an iterable of types is exactly ``str`` (or ``None``'s).
_ONLY_STR = frozenset({str}).issuperset
_STR_OR_NONE = frozenset({str, type(None)}).issuperset
#: The json module's string encoder without ASCII escaping (C): what
#: :data:`_FAST_DUMPS` calls for every string it writes.
_ESC: Callable[[str], str] = json.encoder.encode_basestring
_FAST_DUMPS = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def _plain(value: Any) -> bool:
    """Whether ``value`` holds only what ``json`` and RFC 8785 serialise identically.

    That is: ``None``, ``bool``, ``str``, ``int`` within the IEEE 754 safe range,
    lists of these and objects with ASCII keys (for ASCII keys, code-point
    order is UTF-16 order). Exact types only: a subclass could serialise
    differently. Floats are left to :mod:`rfc8785` (ECMAScript number form).
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-_SAFE_INT <= value <= _SAFE_INT)
    # Loops, not all(<generator>), and strings (most members) tested inline: one
    # entry per imported record passes through here (docs/benchmarks.md).
    if kind is list:
        for v in value:  # noqa: SIM110 - a loop: no generator frame per member
            if type(v) is not str and not _plain(v):
                return False
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                return False
            if type(v) is not str and not _plain(v):
                return False
        return True
    return False


def canonical(obj: Any) -> bytes:
    """RFC 8785 canonical JSON bytes of ``obj`` (the exact bytes :mod:`rfc8785` gives).

    For the values log entries hold, the C-accelerated :mod:`json` encoder
    with sorted keys, no whitespace and no ASCII escaping produces the same
    bytes as RFC 8785 (same string escapes: ``\\b \\f \\n \\r \\t``, ``\\u00xx``
    in lower case for other control characters, nothing else escaped) about
    ten times faster; anything else (floats, big integers, non-ASCII keys,
    lone surrogates) goes through :mod:`rfc8785` itself.
    """
    if _plain(obj):
        try:
            return _FAST_DUMPS(obj).encode("utf-8")
        except UnicodeEncodeError:
            pass  # a lone surrogate: rfc8785 raises its own error
    return bytes(rfc8785.dumps(obj))


def is_canonical(obj: Any, entry: bytes) -> bool:
    """Whether ``entry`` is the canonical encoding of ``obj``, its own parse.

    The library writes canonical bytes only. A member written twice is its first
    value in the stores' index columns (action, ids, recipient) and its last for
    ``json.loads``: every check and report (reviews RV9-6, RV11-1).
    """
    try:
        return canonical(obj) == entry
    except (TypeError, ValueError):  # rfc8785's errors are ValueErrors
        return False


def canonical_plain(obj: Any) -> bytes:
    """:func:`canonical` without its type check, for objects the caller built from
    strings, small integers, lists and dicts with ASCII keys only (signed
    statements and their envelopes, one per imported record). For those the
    :mod:`json` encoder's bytes are RFC 8785's (see :func:`canonical`)."""
    return _FAST_DUMPS(obj).encode("utf-8")


def append(log: AuditRepo, events: Sequence[Event], now: datetime) -> list[int]:
    """Append entries for ``events``; must run inside the backend's transaction.

    Reads the head under the write lock, so concurrent processes extend one
    linear chain. Returns the sequence numbers given.

    Stamps monotonically: an entry is dated ``max(now, the previous entry's
    time)``, so a clock stepped back (NTP, a wrong manual setting, another
    machine's clock) never dates an entry before its predecessor, and
    :func:`verify` may refuse timestamps that go backwards (issue 15).
    """
    seq, prev = log.head()
    # A minimal appender (the benchmarks' in-memory log) may not read entries back.
    entry_at = getattr(log, "entry_at", None)
    if seq > 0 and entry_at is not None:
        last = entry_at(seq - 1)
        last_ts = None if last is None else _one_entry_time(last[0])
        if last_ts is not None and last_ts > now:
            now = last_ts
    ts = iso(now)
    # The acting user signs the entries in their own name (docs/trust.md): an
    # entry written in another's name then lacks that user's signature. One
    # signature closes each run of their consecutive entries (docs/decisions.md,
    # "One signature per appended run"): the run's last entry, over where the
    # run starts and the last entry's hash (the chain commits to the rest).
    signer = getattr(log, "signer", None)
    name = None if signer is None else signer.name
    sign = None if signer is None else signing_function(signer) if len(events) > 1 else signer.sign
    rows: list[tuple[int, bytes, bytes, bytes | None]] = []
    start: int | None = None  # the first entry of the signer's open run
    last = len(events) - 1
    for i, event in enumerate(events):
        entry = encode_entry(seq, ts, event, prev)
        digest = leaf_hash(entry)
        sig = None
        if sign is not None and event.actor == name:
            if event.action in SIGN_ALONE:
                # Never inside a run: the entry before it closed the open run.
                sig = sign(entry_message(digest))
            elif i == last or events[i + 1].actor != name or events[i + 1].action in SIGN_ALONE:
                sig = sign(entry_message(digest) if start is None else run_message(start, digest))
                start = None
            elif start is None:
                start = seq
        rows.append((seq, entry, digest, sig))
        prev = digest
        seq += 1
    log.append(rows)
    return [r[0] for r in rows]


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


@dataclass
class VerifyReport:
    """The result of a successful verification."""

    entries: int
    root: bytes
    checkpoints: int
    witnessed: int
    signers: list[str]
    #: What a checkpoint of this log keeps so a later check can resume from it:
    #: the Merkle frontier before the last entry, then the last entry's leaf hash.
    resume_state: bytes = field(default=b"", repr=False)
    #: The first entry checked: 0, or the size of the checkpoint resumed from.
    checked_from: int = 0
    #: :func:`checkpoint_digest` of every checkpoint this verification compared
    #: with the log (all of them: a larger one fails as a truncation).
    checked: bytes = field(default=b"", repr=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly summary."""
        return {
            "ok": True,
            "entries": self.entries,
            "root": self.root.hex(),
            "checkpoints_verified": self.checkpoints,
            "witness_checkpoints_verified": self.witnessed,
            "signers": self.signers,
        }


def _bad(message: str) -> IntegrityError:
    return IntegrityError(_t("audit log integrity failure: {problem}", problem=message))


@dataclass(frozen=True)
class Resume:
    """A log prefix already verified, as kept with a checkpoint of ``size`` entries.

    Only for a checkpoint the verifier signed itself (its signature checked
    with the key of the unlocked identity, not one from the database). Built by
    :meth:`from_state`, which accepts the stored state only if it gives the
    signed root: then the frontier and the last entry's leaf hash are exactly
    those the signature covers, and only the entries after them need checking
    before signing again (docs/decisions.md).
    """

    size: int
    frontier: Frontier
    before: Frontier
    last_leaf: bytes

    @classmethod
    def from_state(cls, size: int, state: bytes, root: bytes) -> Resume | None:
        """From :attr:`VerifyReport.resume_state`; ``None`` unless it yields ``root``."""
        if size < 1 or len(state) < HASH_SIZE:
            return None
        try:
            before = Frontier.from_bytes(size - 1, state[:-HASH_SIZE])
        except ValueError:
            return None
        last_leaf = state[-HASH_SIZE:]
        frontier = before.copy()
        frontier.append(last_leaf)
        # Another (before, last) pair with this root would be a SHA-256 collision.
        if frontier.root() != root:
            return None
        return cls(size, frontier, before, last_leaf)


@dataclass(frozen=True)
class KnownTree:
    """The Merkle tree of a log prefix the caller verified before, to resume building from.

    ``state`` is :attr:`VerifyReport.resume_state` of a verification that ended
    at ``size`` entries (the frontier before the last entry, then its leaf
    hash ``head``), and ``checked`` the :func:`checkpoint_digest` of the
    checkpoints it compared with the log. Only as trustworthy as where it came
    from: the caller takes it from the verifier's own signed state
    (``_registrations.load_tree``). :func:`verify` still checks the chain of
    the prefix from the first entry and that entry ``size - 1`` hashes to
    ``head``; then the prefix is the very bytes verified before and the
    frontier is its own (docs/decisions.md).
    """

    size: int
    state: bytes
    checked: bytes

    @property
    def head(self) -> bytes:
        """The leaf hash of entry ``size - 1``."""
        return self.state[-HASH_SIZE:]

    def frontiers(self) -> tuple[Frontier, Frontier]:
        """(the frontier before the last entry, the frontier of all ``size`` entries);
        ValueError if the state does not fit ``size``."""
        if self.size < 1 or len(self.state) < HASH_SIZE:
            raise ValueError(_t("a known tree needs at least one entry"))
        before = Frontier.from_bytes(self.size - 1, self.state[:-HASH_SIZE])
        after = before.copy()
        after.append(self.head)
        return before, after


def checkpoint_digest(pairs: Iterable[tuple[int, bytes]], upto: int) -> bytes:
    """SHA-256 over the distinct (size, root) pairs of at most ``upto`` entries, sorted.

    What a :class:`KnownTree` records as checked: a later verification may
    skip rebuilding the prefix's tree only if the checkpoints of that prefix
    are exactly these (any added, changed or removed one: it rebuilds).
    """
    chosen = sorted({(size, root) for size, root in pairs if size <= upto})
    digest = hashlib.sha256(b"childvault/checked-checkpoints/1\x00")
    for size, root in chosen:
        digest.update(size.to_bytes(8, "big") + root)
    return digest.digest()


@dataclass(frozen=True)
class _Expected:
    size: int
    root: bytes
    source: str


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
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise IntegrityError(_t("the witness {path} is not a regular file", path=path))
        fh = path.open("rb")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IntegrityError(
            _t("cannot read the witness file {path}: {strerror}", path=path, strerror=exc.strerror)
        ) from exc
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


# The grammar of the entries this library writes (RFC 8785 bytes of the object
# built by encode_entry): a JSON string, the detail object (scalars and lists of
# strings), and the whole entry with its keys in canonical order.
_J_STR = r'"[^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*+)*+"'
_J_OPT = rf"(?:null|{_J_STR})"
_J_STRS = rf"\[(?:{_J_STR}(?:,{_J_STR})*+)?\]"
_J_VAL = rf"(?:{_J_STR}|null|true|false|-?(?:0|[1-9][0-9]*+)|{_J_STRS})"
_J_DETAIL = rf"\{{(?:{_J_STR}:{_J_VAL}(?:,{_J_STR}:{_J_VAL})*+)?\}}"


@functools.cache
def _entry_re() -> re.Pattern[str]:
    """The grammar of an entry as :func:`encode_entry` writes it; groups: prev, seq, ts.

    Compiled on first use, not at import: every command imports this module,
    and only verification and the time checks read entries (issue 18).
    """
    return re.compile(
        rf'\{{"action":{_J_STR},"actor":{_J_STR},"detail":{_J_DETAIL},"fields":{_J_STRS},'
        rf'"grant":{_J_OPT},"outcome":{_J_STR},"prev":(?:null|"([0-9a-f]{{64}})"),'
        rf'"purpose":{_J_OPT},"records":{_J_STRS},"request":{_J_OPT},'
        rf'"seq":(0|[1-9][0-9]*+),"ts":({_J_STR})\}}'
    )


def _seq_prev(entry: bytes) -> tuple[Any, Any]:
    """The top-level ``seq`` and ``prev`` of a stored entry, as ``json.loads`` gives them.

    Fast path: an entry of exactly the shape :func:`encode_entry` writes (valid
    UTF-8, valid JSON, top-level keys in canonical order) is recognised by one
    regular expression whose groups are the top-level ``prev`` and ``seq``.
    Anything else (tampered, foreign or older shapes) is parsed with
    :func:`json.loads` as before, so both paths give the same values and raise
    the same errors.
    """
    try:
        match = _entry_re().fullmatch(entry.decode("utf-8"))
    except UnicodeDecodeError:
        match = None
    if match is not None:
        return int(match.group(2)), match.group(1)
    obj = json.loads(entry)
    return obj["seq"], obj["prev"]


_PROGRESS_EVERY = 10000

#: How far an entry's ``ts`` may lie before the latest earlier entry's without
#: failing :func:`verify`. :func:`append` never writes a step back; the margin
#: is for logs written before it stamped monotonically, by processes on
#: machines whose clocks differed by up to a few seconds (docs/decisions.md).
TS_TOLERANCE = timedelta(seconds=5)
# What :func:`iso` writes (or the same without microseconds): among stamps of
# one width, text order is time order.
_ISO_PATTERN = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z"


def entry_time(entry: bytes | str) -> datetime | None:
    """The ``ts`` of a stored entry as an aware datetime; ``None`` if it has none that parses."""
    try:
        text = entry.decode("utf-8") if isinstance(entry, bytes) else entry
        match = _entry_re().fullmatch(text)
        ts = json.loads(match.group(3)) if match is not None else json.loads(text).get("ts")
        return parse_iso(ts) if isinstance(ts, str) else None
    except (ValueError, AttributeError, TypeError):
        return None


def _one_entry_time(entry: bytes) -> datetime | None:
    """:func:`entry_time` of a single entry (what :func:`append` reads), by
    :func:`json.loads` alone: the same value (the grammar's ``ts`` group is the
    top-level ``ts``), without compiling the entry grammar, which costs more than
    a whole short command's log append (issue 18: a command on a session)."""
    try:
        ts = json.loads(entry).get("ts")
        return parse_iso(ts) if isinstance(ts, str) else None
    except (ValueError, AttributeError, TypeError):
        return None


def _check_time(seq: int, entry: bytes, latest: datetime | None) -> datetime:
    """The entry's time, or ``latest`` if later; IntegrityError if it is before
    ``latest`` beyond the tolerance."""
    moment = entry_time(entry)
    if moment is None or moment.tzinfo is None:
        raise _bad(_t("entry {seq} has no valid timestamp (ts)", seq=seq))
    if latest is not None and moment < latest - TS_TOLERANCE:
        raise _bad(
            _t(
                "entry {seq} is dated {moment}, {seconds:.0f} s before an earlier entry "
                "({latest}): log timestamps never go backwards (tolerance {tolerance:.0f} s); the "
                "entry was inserted, re-dated or written by a process whose clock was wrong",
                seq=seq,
                moment=iso(moment),
                seconds=(latest - moment).total_seconds(),
                latest=iso(latest),
                tolerance=TS_TOLERANCE.total_seconds(),
            )
        )
    return moment if latest is None or moment > latest else latest


def _check_roots(frontier: Frontier, due: Iterable[_Expected]) -> None:
    """Compare the frontier's root with every checkpoint of its size."""
    root = None
    for exp in due:
        if root is None:
            root = frontier.root()
        if root != exp.root:
            raise _bad(
                _t(
                    "diverged: the first {size} entries do not match {source} (the log was "
                    "rewritten or replaced)",
                    size=frontier.size,
                    source=exp.source,
                )
            )


def _hashed_page(
    rows: Sequence[Any], index: int
) -> tuple[Sequence[int], Sequence[bytes], list[bytes]] | None:
    """(seqs, entries, leaf hashes) of a page if its seqs run on from ``index`` and
    every stored hash is the recomputed leaf hash; else None. May raise
    TypeError/ValueError on altered columns (the callers catch them)."""
    seqs, entries, digests = zip(*rows, strict=True)
    if list(seqs) != list(range(index, index + len(seqs))):
        return None
    sha = hashlib.sha256
    leaves = [sha(b"\x00" + entry).digest() for entry in entries]
    if leaves != list(digests):
        return None
    return seqs, entries, leaves


def _in_time_order(stamps: Sequence[str], latest: datetime | None) -> bool:
    """Quoted-free :func:`iso` texts of one width, none before the one before it,
    the first not before ``latest``: the fast paths' time check (text order is
    time order for one width; anything else goes to the reference loop)."""
    # map() and sorted() rather than generators: one call a page, in C, not
    # a Python frame an entry. A list equals its sorted copy exactly when no
    # text is greater than the one after it.
    stamps = list(stamps)
    return not (
        len(set(map(len, stamps))) != 1
        or not all(map(re.compile(_ISO_PATTERN).fullmatch, stamps))
        or stamps != sorted(stamps)
        or (latest is not None and parse_iso(stamps[0]) < latest)
    )


def _check_page(
    rows: Sequence[Any], index: int, prev_hex: str | None, latest: datetime | None = None
) -> list[bytes] | None:
    """The leaf hashes of a page of raw audit rows if every entry passes, else ``None``.

    The same per-entry checks as the reference loop in :func:`verify`, done a
    page at a time: seq contiguous from ``index``, stored hash equal to the
    recomputed leaf hash, every entry of the fast shape of :func:`_seq_prev`
    with its ``seq`` and its ``prev`` equal to the previous entry's hash
    (``prev_hex`` for the first). ``None`` (never an error) on anything else,
    including a column of another type, so the caller re-checks the page entry
    by entry and reports the first problem exactly as before. Timestamps pass
    here only if all have one width of :func:`iso`'s form and none is before
    the one before it (nor the first before ``latest``, the latest so far);
    anything else goes to the reference loop, which allows the tolerance.
    """
    if not rows:
        return None
    try:
        hashed = _hashed_page(rows, index)
        if hashed is None:
            return None
        seqs, entries, leaves = hashed
        count = len(seqs)
        fullmatch = _entry_re().fullmatch
        matches = [fullmatch(entry.decode("utf-8")) for entry in entries]
    except (TypeError, ValueError, AttributeError):
        return None  # wrong column types, bad UTF-8: the reference loop decides
    groups = [match.groups() for match in matches if match is not None]
    if len(groups) != count:
        return None  # not all in the fast shape: json.loads decides, entry by entry
    prevs, seq_texts, ts_texts = zip(*groups, strict=True)
    # The seq group is canonical decimal, so equal text means equal number.
    if list(seq_texts) != [str(seq) for seq in seqs]:
        return None
    # Quoted iso() text of one width, so text order is time order.
    stamps = [t[1:-1] for t in ts_texts]
    if not _in_time_order(stamps, latest):
        return None
    if prevs[0] != prev_hex:
        return None
    # Each prev group is exactly 64 hex digits: equal concatenations, equal links.
    rest = prevs[1:]
    if None in rest or "".join(rest) != b"".join(leaves[:-1]).hex():
        return None
    return leaves


class KnownPrefixMismatch(IntegrityError):
    """The log's entry at the end of a ``known`` prefix does not hash to the known
    head: the claimed verified prefix does not hold (a restore, or tampering);
    the caller verifies again without it, so every entry gets every check."""


#: The ``prev`` member as encode_entry writes it, and its key token.
_PREV_MARK = b'"prev":"'
_PREV_KEY = b'"prev"'
_PREV_AT = len(_PREV_MARK)
#: The ``ts`` member likewise.
_TS_MARK = b'"ts":"'
_TS_KEY = b'"ts"'
_TS_AT = len(_TS_MARK)


def _check_known_page(
    rows: Sequence[Any],
    index: int,
    prev_hex: str | None,
    latest: datetime | None = None,
    *,
    times: bool = True,
) -> list[bytes] | None:
    """:func:`_check_page` for entries inside a prefix the caller verified before.

    Only the chain is checked: seq contiguous, stored hash equal to the
    recomputed leaf hash, and the 64 characters after each entry's
    ``"prev":"`` equal to the previous leaf hash (in hex), for entries with no
    backslash and exactly one ``"prev"`` token. In such an entry every quote
    is structural, so that token is its only ``prev`` key: the top-level one
    the entry's earlier full check read (an entry written otherwise is left
    to the full checks, as is anything else that differs).

    Timestamps get the same check as in :func:`_check_page` (the prefix was
    verified by the trust-state replay, which does not look at times), read
    the same way from the one ``"ts"`` token of such an entry.

    That is enough because :func:`verify` also requires the prefix's last
    entry to hash to the head the caller verified (:class:`KnownPrefixMismatch`
    otherwise): going back from that entry, each entry's bytes name the hash
    of the one before, so every entry is the very bytes the caller verified
    before (another would be a SHA-256 collision), its ``seq`` and link
    included.

    ``times=False``: the timestamps are not read, for entries below a
    :class:`KnownTree`, whose times an earlier :func:`verify` checked (the same
    bytes, by the argument above).
    """
    if not rows or index == 0 or prev_hex is None:
        return None  # the first entry has no prev: the full check handles it
    try:
        hashed = _hashed_page(rows, index)
        if hashed is None:
            return None
        _seqs, entries, leaves = hashed
        # The per-entry conditions, checked on the page at once: no backslash
        # in any entry (every quote is structural, so the one "prev" token is
        # the entry's only prev key, the top-level one its check used), and as
        # many "prev" and "ts" tokens in the page as entries. A token cannot
        # span the NUL between two entries, so with each entry holding at least
        # one (its mark is found below), each holds exactly one.
        page = b"\x00".join(entries)
        count = len(entries)
        if b"\\" in page or page.count(_PREV_KEY) != count:
            return None
        if times and page.count(_TS_KEY) != count:
            return None
        prev_at = [entry.find(_PREV_MARK) for entry in entries]
        ts_at = [entry.find(_TS_MARK) + _TS_AT for entry in entries] if times else []
        if -1 in prev_at or _TS_AT - 1 in ts_at:
            return None
        prevs = b"".join(
            [
                entry[at + _PREV_AT : at + _PREV_AT + 64]
                for entry, at in zip(entries, prev_at, strict=True)
            ]
        )
        stamps = (
            [
                entry[at : entry.index(b'"', at)].decode("ascii")
                for entry, at in zip(entries, ts_at, strict=True)
            ]
            if times
            else []
        )
    except (TypeError, ValueError, AttributeError):
        return None
    if times and not _in_time_order(stamps, latest):
        return None
    # Equal to the hex of the leaves, so each is exactly 64 lower-case hex digits.
    if prevs != (prev_hex + b"".join(leaves[:-1]).hex()).encode("ascii"):
        return None
    return leaves


def _check_known_head(index: int, last_leaf: bytes, known: tuple[int, bytes] | None) -> None:
    """At ``index`` entries: the end of the known prefix must hash to its head."""
    if known is None:
        return
    size, head = known
    if index < size:
        raise KnownPrefixMismatch(
            _t("the log has {index} entries, fewer than last verified", index=index)
        )
    if index == size and last_leaf != head:
        raise KnownPrefixMismatch(_t("entry {entry} is not the one last verified", entry=index - 1))


def _take_tree(index: int, last_leaf: bytes, tree: KnownTree | None) -> tuple[Frontier, Frontier]:
    """At ``index`` = ``tree.size`` entries: (before, frontier) from the known tree, if
    the entry just checked is the one it ends with; else KnownPrefixMismatch."""
    if tree is None or last_leaf != tree.head:
        raise KnownPrefixMismatch(_t("entry {index} is not the one last verified", index=index - 1))
    return tree.frontiers()


def _split_pages(
    pages: Iterable[Sequence[Any]], index: int, *splits: int
) -> Iterator[Sequence[Any]]:
    """The pages of rows from ``index`` on, cut after entry 0 (it has no ``prev``:
    the full check takes it alone) and where each known prefix ends (``splits``)."""
    wanted = [c for c in splits if c]
    cuts = sorted({c for c in (1, *wanted) if c > index}) if wanted else []
    for rows in pages:
        end = index + len(rows)
        at = 0
        for cut in cuts:
            if index < cut < end:
                yield rows[at : cut - index]
                at = cut - index
        yield rows[at:] if at else rows
        index = end


def verify(
    log: LogSource,
    *,
    origin: str,
    signers: Mapping[str, bytes],
    witness_notes: Iterable[str] = (),
    progress: Callable[[int], None] | None = None,
    resume: Resume | None = None,
    known: tuple[int, bytes] | None = None,
    tree: KnownTree | None = None,
) -> VerifyReport:
    """Check the whole log; raise :class:`IntegrityError` naming the first bad entry.

    Streams the entries: re-hashes each, checks the stored hash, the sequence
    and the ``prev`` link, folds the leaf into a Merkle frontier and compares
    the root with every stored and witnessed checkpoint of that size. A
    checkpoint larger than the log means the log was truncated; a root
    mismatch means it diverged (was replaced or rewritten).

    With ``resume``, the entries before ``resume.size`` are not re-read: the
    walk starts from the resumed frontier, after checking the hash of the
    entry the next one links to; stored checkpoints of smaller trees are then
    not read (``log.checkpoints_from``) and the caller passes only the witness
    notes that bind the rest (a full verification checks every root).

    With ``known = (N, H)`` (the caller verified the first N entries before and
    the last of them hashed to H), those entries get the chain checks only
    (:func:`_check_known_page`); if entry N-1 does not hash to H, or the log
    has fewer than N entries, :class:`KnownPrefixMismatch` is raised and the
    caller checks again without ``known``.

    With ``tree`` (a :class:`KnownTree` the caller verified before), the
    Merkle tree of its prefix is not rebuilt when that prefix's checkpoints
    are exactly those compared with it then: the prefix gets every chain
    check as before, entry ``tree.size - 1`` must hash to ``tree.head``
    (:class:`KnownPrefixMismatch` otherwise, or if the log is shorter), and
    the tree is built on from the stored frontier (docs/decisions.md).
    """
    expected: dict[int, list[_Expected]] = {}
    used_signers: set[str] = set()

    def add(note: str, source: str) -> Checkpoint:
        cp, names = verify_note(note, signers)
        if cp.origin != origin:
            raise _bad(
                _t("{source} is for another log ({origin!r})", source=source, origin=cp.origin)
            )
        used_signers.update(names)
        expected.setdefault(cp.size, []).append(_Expected(cp.size, cp.root, source))
        return cp

    # Resumed, a stored checkpoint of a smaller tree would only get its
    # signature checked (the prefix it covers is fixed by the resumed one):
    # not read at all, so an approval does not grow with the checkpoints.
    stored = log.checkpoints_from(resume.size) if resume is not None else log.checkpoints()
    for row in stored:
        try:
            cp = add(row.note, _t("stored checkpoint {id}", id=row.id))
        except IntegrityError as exc:
            raise _bad(
                _t(
                    "stored checkpoint {id} does not verify: {problem}",
                    id=row.id,
                    problem=exc.args[0],
                )
            ) from exc
        if (cp.size, cp.root) != (row.size, row.root):
            raise _bad(
                _t(
                    "stored checkpoint {id}: its size or root column differs from its note",
                    id=row.id,
                )
            )
    witnessed = 0
    for number, note in enumerate(witness_notes, start=1):
        try:
            add(note, _t("witness checkpoint {number}", number=number))
        except IntegrityError as exc:
            raise _bad(
                _t(
                    "witness checkpoint {number} does not verify: {problem}",
                    number=number,
                    problem=exc.args[0],
                )
            ) from exc
        witnessed += 1

    frontier = Frontier()
    prev_hex: str | None = None
    # The latest entry time so far: no entry may be dated before it beyond
    # TS_TOLERANCE (DESIGN section 7: log timestamps never go backwards).
    latest: datetime | None = None
    index = 0
    before = Frontier()  # the frontier before the last entry seen
    last_leaf = b""
    if resume is not None:
        frontier, before = resume.frontier.copy(), resume.before.copy()
        last_leaf = resume.last_leaf
        index = resume.size
        last = log.entry_at(index - 1)
        if last is None:
            raise _bad(
                _t(
                    "truncated: entry {entry} is missing but a checkpoint you signed covers "
                    "{index} entries",
                    entry=index - 1,
                    index=index,
                )
            )
        if leaf_hash(last[0]) != last[1]:
            raise _bad(
                _t("entry {entry} was modified (its bytes do not match its hash)", entry=index - 1)
            )
        if last[1] != last_leaf:
            raise _bad(
                _t(
                    "diverged: entry {entry} is not the one a checkpoint you signed covers (the "
                    "log was rewritten or replaced)",
                    entry=index - 1,
                )
            )
        prev_hex = last_leaf.hex()
        latest = _check_time(index - 1, last[0], None)
        _check_roots(frontier, expected.get(index, ()))
    checked_from = index
    # Sizes at which the per-entry loop compares roots (after that entry).
    marks = sorted(size for size in expected if size > index)
    known_size = known[0] if known is not None and known[0] > index else 0
    # Below skip_to the tree is not built: the known tree's frontier takes over there.
    skip_to = 0
    # Below light_to the entries get the chain checks only (_check_known_page):
    # the known prefix's and the known tree's, each ending in its known head.
    light_to = known_size
    if tree is not None and resume is None and tree.size > index:
        pairs = [(e.size, e.root) for sizes in expected.values() for e in sizes]
        if checkpoint_digest(pairs, tree.size) == tree.checked:
            try:
                tree.frontiers()
                skip_to = tree.size
                light_to = max(known_size, skip_to)
            except ValueError:
                skip_to = 0  # a state that does not fit its size: build the tree
    for rows in _split_pages(log.pages(index), index, known_size, skip_to):
        if known_size and index == known_size:
            _check_known_head(index, last_leaf, known)
        if skip_to and index == skip_to:
            before, frontier = _take_tree(index, last_leaf, tree)
            skip_to = 0
        # Pages are cut at skip_to, so a page lies wholly below it or not at all.
        building = not skip_to
        leaves = None
        if index < light_to:
            # Below the known tree the times were checked by the verification
            # that kept it (the same bytes): not read again.
            leaves = _check_known_page(rows, index, prev_hex, latest, times=building)
        if leaves is None:
            leaves = _check_page(rows, index, prev_hex, latest)
        if leaves is None:
            # Something in this page is off (or merely not in the fast shape):
            # the reference loop, entry by entry, names the first problem.
            for row in rows:
                seq, entry, digest = log.row(row)
                if seq != index:
                    raise _bad(
                        _t(
                            "entry {index} is missing (next stored entry is {seq}): entries were "
                            "deleted",
                            index=index,
                            seq=seq,
                        )
                    )
                computed = leaf_hash(entry)
                if computed != digest:
                    raise _bad(
                        _t("entry {seq} was modified (its bytes do not match its hash)", seq=seq)
                    )
                try:
                    entry_seq, entry_prev = _seq_prev(entry)
                except (ValueError, KeyError, TypeError) as exc:
                    raise _bad(_t("entry {seq} is not a valid log entry", seq=seq)) from exc
                if entry_seq != seq:
                    raise _bad(
                        _t(
                            "entry {seq} carries sequence number {entry_seq}: entries were "
                            "reordered",
                            seq=seq,
                            entry_seq=entry_seq,
                        )
                    )
                if entry_prev != prev_hex:
                    raise _bad(
                        _t(
                            "entry {seq} does not link to entry {prev} (an entry before it was "
                            "changed, removed, inserted or reordered)",
                            seq=seq,
                            prev=seq - 1,
                        )
                    )
                latest = _check_time(seq, entry, latest)
                prev_hex = computed.hex()
                if building:
                    before = frontier.copy()
                    frontier.append(computed)
                last_leaf = computed
                index += 1
                if building:
                    _check_roots(frontier, expected.get(index, ()))
                if progress is not None and index % _PROGRESS_EVERY == 0:
                    progress(index)
            continue
        # Every entry of the page checked out: fold its leaves, stopping at each
        # checkpoint size and progress tick inside it, in the order the
        # reference loop meets them.
        end = index + len(leaves)
        pos = end if not building else index
        if not building and progress is not None:
            every = _PROGRESS_EVERY
            for tick in range((index // every + 1) * every, end + 1, every):
                progress(tick)
        while pos < end:
            stop = end
            at = bisect_right(marks, pos)
            if at < len(marks):
                stop = min(stop, marks[at])
            if progress is not None:
                stop = min(stop, (pos // _PROGRESS_EVERY + 1) * _PROGRESS_EVERY)
            chunk = leaves[pos - index : stop - index]
            frontier.extend(chunk[:-1])
            before = frontier.copy()
            frontier.append(chunk[-1])
            pos = stop
            _check_roots(frontier, expected.get(pos, ()))
            if progress is not None and pos % _PROGRESS_EVERY == 0:
                progress(pos)
        index = end
        last_leaf = leaves[-1]
        prev_hex = last_leaf.hex()
        # The page's times were checked non-decreasing: its last is the latest.
        latest = entry_time(log.row(rows[-1])[1])
    if known_size and index <= known_size:
        _check_known_head(index, last_leaf, known)
    if skip_to:
        if index < skip_to:
            raise KnownPrefixMismatch(
                _t("the log has {index} entries, fewer than last verified", index=index)
            )
        before, frontier = _take_tree(index, last_leaf, tree)
    if index == 0 and expected.get(0):
        for exp in expected[0]:
            if frontier.root() != exp.root:
                raise _bad(_t("diverged: the empty log does not match {source}", source=exp.source))
    longer = [e for sizes in expected.values() for e in sizes if e.size > index]
    if longer:
        worst = max(longer, key=lambda e: e.size)
        raise _bad(
            _t(
                "truncated: the log has {index} entries but {source} covers {size} (entries "
                "{index} to {last} were removed)",
                index=index,
                source=worst.source,
                size=worst.size,
                last=worst.size - 1,
            )
        )
    return VerifyReport(
        index,
        frontier.root(),
        len(stored),
        witnessed,
        sorted(used_signers),
        resume_state=before.to_bytes() + last_leaf if index else b"",
        checked_from=checked_from,
        checked=checkpoint_digest(
            [(e.size, e.root) for sizes in expected.values() for e in sizes], index
        ),
    )


def decode_entry(entry: bytes) -> dict[str, Any]:
    """Parse a stored entry (for display and reports)."""
    obj = json.loads(entry)
    if not isinstance(obj, dict):
        raise IntegrityError(_t("a log entry is not an object"))
    return obj


# -- issue 15 (compliance): the rights and incident registers, request bases ----
# Appended as one union so parallel edits of the set above merge cleanly.
ACTIONS = ACTIONS | frozenset(
    {
        "rights.open",
        "rights.close",
        "rights.list",
        "incident.open",
        "incident.add_records",
        "incident.notify",
        "incident.close",
        "incident.list",
        "incident.contacts",
        "request.cosign",
        "report.transfers",
    }
)
# Issue 15 (rights register links): an operation that answered a rights request.
ACTIONS = ACTIONS | frozenset({"rights.link"})


# -- issue 13 (server): refusals of authenticated users, logged by the server ---
ACTIONS = ACTIONS | frozenset({"server.refuse"})
