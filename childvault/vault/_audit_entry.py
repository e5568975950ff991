"""The audit log's entry format: the actions, the canonical bytes of an entry and reading them back.

Separate from :mod:`._audit` (append and verification) because every signer,
statement and report needs only the encoding, and it is the stored format.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import rfc8785

from childvault._i18n import _t
from childvault.keys import IntegrityError
from childvault.vault._time import parse_iso

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


#: The actions a read looks up by its grant (``grant_ref``), in one query: the
#: grant's revocations and reads, which decide against the verified log whether
#: it is revoked and how many uses are spent (``AccessReads._grant_in_log``; a
#: server sends the same lookup ahead with a read's inputs).
GRANT_ACTIONS = ("grant.read", "grant.revoke")


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


# -- compliance gap 9: the guardian contact list of a decommissioning, opened ---
ACTIONS = ACTIONS | frozenset({"decommission.read_contacts"})
