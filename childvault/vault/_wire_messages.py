"""The messages of a ``childvault serve`` answer, in the reader's language (issue 16).

A server answers a refused or failed call with JSON: ``error`` (English text),
``reason`` (a stable code) and, for a library error, its ``type``. The client
(:mod:`childvault.vault._remote`) turns the answer into an exception whose
message the command line shows in the reader's language:

- a refusal (no ``type``) is described from its reason code by :data:`REFUSALS`,
  a table of marked messages, so it needs nothing from the server but the code;
  what was refused (its English ``error``) follows, translated the same way as a
  library error's message when the server sent its ``template`` and ``params``;
- a library error carries its message's ``template`` and ``params`` as well
  (:func:`message_fields`, on the server), from which the client rebuilds the
  same translatable message (:func:`message_from`), and only if it renders to
  exactly the English ``error`` the server sent: a server cannot make the client
  show anything but what it says in English, and a template may hold nothing
  but plain named placeholders (no format specification, no attribute access).

A plain-text answer (the witness's refusals, C2SP tlog-witness) carries the same
``template`` and ``params`` as JSON in the :data:`HEADER` header
(:func:`message_header`, :func:`message_from_header`): one encoding, one check.

This module imports no HTTP library: both sides use it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from childvault._i18n import N_, Message, _t

__all__ = [
    "HEADER",
    "MAX_HEADER",
    "REFUSALS",
    "message_fields",
    "message_from",
    "message_from_header",
    "message_header",
    "message_of",
    "refusal_message",
]

#: The header of a plain-text answer (the witness's refusals) that carries its
#: message's template and values, for the client to show it translated.
HEADER = "Childvault-Message"
#: Longest such header a client reads (a refusal's message is well under 1 KiB).
MAX_HEADER = 8 * 1024

#: What each refusal reason code of the server means, for the person who was refused.
REFUSALS: dict[str, str] = {
    "missing_signature": N_("the request carried no signature"),
    "malformed_signature": N_("the request's signature is malformed"),
    "missing_digest": N_("the request carried no body digest"),
    "malformed_digest": N_("the request's body digest is malformed"),
    "unknown_user": N_("the server does not know the signing user"),
    "invalid_signature": N_("the request's signature does not verify"),
    "user_disabled": N_("the acting user is disabled"),
    "replay": N_("the request was already received once (a replay)"),
    "clock_skew": N_("the request's time is outside the server's window: check the clock"),
    "digest_mismatch": N_("the request's body does not match its signed digest"),
    "body_too_large": N_("the request is too large"),
    "head_too_large": N_("the request's headers are too large"),
    "ambiguous_framing": N_("the request's length is framed ambiguously (refused as smuggling)"),
    "bare_lf": N_("the request's lines end in a bare LF instead of CRLF"),
    "obs_fold": N_("the request continues a header on a second line (obs-fold)"),
    "control_character": N_("the request's headers hold a control character"),
    "request_target": N_("the request's target is not a path on this server"),
    "malformed_head": N_("the server could not read the request's headers"),
    "host": N_(
        "the request's Host header does not name this server (none, two, or another name: "
        "check the server URL, or the server's --allowed-host)"
    ),
    "request_timeout": N_("the request was not sent in time"),
    "unavailable": N_("the server cannot answer now: try again"),
    "store_unavailable": N_(
        "the server cannot reach its database (down or restarting): try again when it is "
        "back; nothing was changed"
    ),
    "busy": N_("another client's transaction holds the vault: try again"),
    "role": N_("the acting user's roles do not allow this call"),
    "binding": N_("the call names another user than the one who signed it"),
    "unverified": N_("the server could not verify what was sent; nothing was stored"),
    "stale": N_("the vault changed while the request was prepared; nothing was stored"),
    "release_refused": N_("the server refused to release the keys"),
    "server_only": N_("only the server may change this setting"),
    "no_transaction": N_("the transaction is no longer open (rolled back?)"),
    "no_key_slot": N_("the acting user has no key slot in this vault"),
    "unknown_method": N_("the server does not know this call (another version?)"),
    "malformed": N_("the server could not read the request"),
    "internal": N_("the server failed (internal error): see its log"),
    "rate_limited": N_("the server limits how many requests each user makes: try again shortly"),
    "policy": N_("the server refused the approval: it breaks the vault's approval rules"),
    "witness": N_(
        "the change was stored, but the witness did not cosign its checkpoint: "
        "the approval does not count; see the server's log"
    ),
}

#: A template the client accepts: text, ``{{``/``}}``, and ``{name}``/``{name!r}`` only.
_TEMPLATE = re.compile(r"(?:[^{}]|\{\{|\}\}|\{[A-Za-z_][A-Za-z0-9_]*(?:![rs])?\})*")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Nesting of messages inside messages (a list inside a row inside a message: about five).
_DEPTH = 8


def _encode(message: Message, depth: int) -> dict[str, Any] | None:
    params: dict[str, Any] = {}
    for name, value in message.params.items():
        if isinstance(value, Message) and hasattr(value, "template"):
            inner = _encode(value, depth + 1) if depth < _DEPTH else None
            if inner is None:
                return None
            params[name] = inner
        elif value is None or type(value) in (str, int, float, bool):
            params[name] = value
        else:
            # A path, a date, a list: its English text is in ``error``; the
            # message is then shown in English rather than rebuilt wrongly.
            return None
    return {"template": message.template, "params": params}


def message_fields(message: object) -> dict[str, Any]:
    """Server side: ``{"template", "params"}`` of a marked message, else ``{}``."""
    if not isinstance(message, Message) or not hasattr(message, "template"):
        return {}
    return _encode(message, 0) or {}


def message_of(exc: BaseException) -> str:
    """The message ``exc`` was raised with: a :class:`Message` when it was marked
    (so a refusal quoting it stays translatable), else its text."""
    first = exc.args[0] if len(exc.args) == 1 else None
    return first if isinstance(first, Message) else str(exc)


def _decode(doc: object, depth: int) -> Message | None:
    if not isinstance(doc, Mapping) or depth > _DEPTH:
        return None
    template, params = doc.get("template"), doc.get("params")
    if not isinstance(template, str) or not isinstance(params, Mapping):
        return None
    if _TEMPLATE.fullmatch(template) is None:
        return None
    values: dict[str, object] = {}
    for name, value in params.items():
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            return None
        if isinstance(value, Mapping):
            inner = _decode(value, depth + 1)
            if inner is None:
                return None
            values[name] = inner
        elif value is None or type(value) in (str, int, float, bool):
            values[name] = value
        else:
            return None
    try:
        return Message(template, **values)
    except (KeyError, IndexError, ValueError):
        return None


def message_from(doc: Mapping[str, Any]) -> str:
    """Client side: the message of a library error answer, translatable when it can be."""
    english = str(doc.get("error") or "")
    rebuilt = _decode(doc, 0)
    # Only what renders to the very English text the server sent is kept.
    return rebuilt if rebuilt is not None and str(rebuilt) == english else english


def refusal_message(status: int, doc: Mapping[str, Any]) -> str:
    """Client side: why the server refused a call (a refusal, not a library error)."""
    reason = doc.get("reason")
    known = REFUSALS.get(reason) if isinstance(reason, str) else None
    error = str(doc.get("error") or "")
    if known is None:
        return error or _t("the server refused ({status})", status=status)
    why = Message(known)
    # A refusal of the signature layer says only a code word ("unauthorized");
    # a refused call says what was refused: kept after the reason, translated
    # when the server sent its template (the same check as a library error's).
    if " " in error.strip():
        return _t("{why} ({detail})", why=why, detail=message_from(doc))
    return why


def message_header(message: object) -> str | None:
    """Server side, for a plain-text answer (the witness's): the message's
    ``{"template", "params"}`` as one ASCII line for :data:`HEADER`, or None."""
    fields = message_fields(message)
    if not fields:
        return None
    # ensure_ascii: an HTTP header value must be plain ASCII.
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def message_from_header(english: str, header: str | None) -> str:
    """Client side: ``english`` (a plain-text answer), translatable when ``header``
    (see :func:`message_header`) renders to exactly that text; else ``english``."""
    if not header or len(header) > MAX_HEADER:
        return english
    try:
        fields = json.loads(header)
    except ValueError:
        return english
    if not isinstance(fields, Mapping):
        return english
    return message_from({**fields, "error": english})
