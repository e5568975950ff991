"""Argument checks at the public API boundary.

Every public method of :class:`~childvault.vault.Vault` (and the public
helpers) checks the Python types of its arguments first, so a wrong type fails
fast with a :class:`~childvault.keys.UsageError` that names the argument,
instead of a ``TypeError``/``AttributeError`` from deep inside (or, worse, a
wrong but plausible result: a string where a list of ids is expected would be
iterated character by character). Values are checked further by the services
(schema, roles, ids); these checks are about shape only.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

from childvault._i18n import _t, join
from childvault.keys._errors import UsageError

__all__ = [
    "REQUEST_STATUSES",
    "RequestStatus",
    "bool_arg",
    "callable_arg",
    "choice",
    "consent_arg",
    "date_arg",
    "datetime_arg",
    "instance",
    "int_arg",
    "mapping_arg",
    "mapping_of_str",
    "new_records",
    "opt_path",
    "opt_str_seq",
    "path_arg",
    "str_arg",
    "str_seq",
    "timedelta_arg",
]

T = TypeVar("T")

#: The state of an access request.
RequestStatus = Literal["pending", "approved", "denied"]
#: Every state (the ``requests`` table's CHECK constraint).
REQUEST_STATUSES: tuple[RequestStatus, ...] = ("pending", "approved", "denied")


def _kind(value: object) -> str:
    """A short name of ``value``'s type for messages (never the value: it may be data)."""
    return type(value).__name__


def _refuse(where: str, name: str, expected: str, value: object) -> UsageError:
    return UsageError(
        _t(
            "{where}: {name!r} must be {expected}, not {kind}",
            where=where,
            name=name,
            expected=expected,
            kind=_kind(value),
        )
    )


def _no_nul(where: str, name: str, value: str) -> str:
    # No log entry holds U+0000 (review RV11-2): refused here, naming the argument,
    # before anything runs, not as encode_entry's ValueError halfway through an
    # operation (which would skip the refusal's own log entry).
    if "\x00" in value:
        raise UsageError(
            _t("{where}: {name!r} cannot hold the character U+0000", where=where, name=name)
        )
    return value


def str_arg(
    where: str, name: str, value: object, *, optional: bool = False, data: bool = False
) -> str | None:
    """``value`` if it is a ``str`` (or None when ``optional``) without U+0000.

    ``data``: a passphrase, a record's value or an approval token, never
    written to the log as given, so any character is kept (a token with U+0000
    is a malformed token: the one opaque token error, like any other).
    """
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _refuse(where, name, _t("a string"), value)
    return value if data else _no_nul(where, name, value)


def str_seq(where: str, name: str, value: object) -> tuple[str, ...]:
    """``value`` as a tuple of strings; a bare ``str`` (or bytes) is refused, since
    iterating it would give its characters."""
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Collection):
        raise _refuse(where, name, _t("a list of strings"), value)
    items = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise UsageError(
                _t(
                    "{where}: every item of {name!r} must be a string, not {kind}",
                    where=where,
                    name=name,
                    kind=_kind(item),
                )
            )
        _no_nul(where, name, item)
    return items


def opt_str_seq(where: str, name: str, value: object) -> tuple[str, ...] | None:
    """Like :func:`str_seq`, or None."""
    return None if value is None else str_seq(where, name, value)


def mapping_arg(where: str, name: str, value: object) -> Mapping[Any, Any]:
    """``value`` if it is a mapping (a parsed JSON object)."""
    if not isinstance(value, Mapping):
        raise _refuse(where, name, _t("a mapping (a parsed JSON object)"), value)
    return value


def mapping_of_str(where: str, name: str, value: object) -> Mapping[str, str]:
    """``value`` if it is a mapping of strings to strings."""
    if not isinstance(value, Mapping):
        raise _refuse(where, name, _t("a mapping of field names to strings"), value)
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise UsageError(
                _t(
                    "{where}: {name!r} must map field names (str) to values (str)",
                    where=where,
                    name=name,
                )
            )
        _no_nul(where, name, key)  # a field name is logged; its value is not
    return value


def bool_arg(where: str, name: str, value: object) -> bool:
    """``value`` if it is a ``bool`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise _refuse(where, name, _t("True or False"), value)
    return value


def int_arg(where: str, name: str, value: object, *, minimum: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(where, name, _t("an integer"), value)
    if minimum is not None and value < minimum:
        raise UsageError(
            _t(
                "{where}: {name!r} must be at least {minimum}",
                where=where,
                name=name,
                minimum=minimum,
            )
        )
    return value


def datetime_arg(where: str, name: str, value: object, *, optional: bool = True) -> datetime | None:
    """``value`` if it is a timezone-aware ``datetime`` (None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, datetime):
        raise _refuse(where, name, _t("a datetime"), value)
    if value.tzinfo is None or value.utcoffset() is None:
        raise UsageError(
            _t("{where}: {name!r} must be timezone-aware (e.g. tzinfo=UTC)", where=where, name=name)
        )
    return value


def date_arg(where: str, name: str, value: object) -> date:
    """``value`` if it is a ``date`` (a ``datetime`` is refused: a day is meant)."""
    if isinstance(value, datetime) or not isinstance(value, date):
        raise _refuse(where, name, _t("a datetime.date"), value)
    return value


def timedelta_arg(where: str, name: str, value: object, *, optional: bool = True) -> Any:
    """``value`` if it is a ``timedelta`` (or None when ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, timedelta):
        raise _refuse(where, name, _t("a timedelta"), value)
    return value


def path_arg(where: str, name: str, value: object) -> Path:
    """``value`` as a :class:`Path` if it is a non-empty ``str`` or a path."""
    if isinstance(value, str | Path) and str(value) and "\x00" not in str(value):
        # A NUL byte would make the operating system call raise ValueError later.
        return Path(value)
    raise _refuse(where, name, _t("a path (str or pathlib.Path, without NUL)"), value)


def opt_path(where: str, name: str, value: object) -> Path | None:
    """Like :func:`path_arg`, or None."""
    return None if value is None else path_arg(where, name, value)


def callable_arg(where: str, name: str, value: object) -> Callable[..., Any] | None:
    """``value`` if it is callable or None."""
    if value is not None and not callable(value):
        raise _refuse(where, name, _t("a function or None"), value)
    return value


def instance(where: str, name: str, value: object, cls: type[T], *, optional: bool = False) -> T:
    """``value`` if it is a ``cls`` (None when ``optional``)."""
    if value is None and optional:
        return value  # type: ignore[return-value]
    if not isinstance(value, cls):
        raise _refuse(where, name, _t("a {cls}", cls=cls.__name__), value)
    return value


def choice(
    where: str, name: str, value: object, allowed: Sequence[str], *, optional: bool = False
) -> str | None:
    """``value`` if it is one of ``allowed`` (None when ``optional``); unknown values are
    refused instead of silently matching nothing."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or value not in allowed:
        shown = join(", ", allowed)
        raise UsageError(
            _t("{where}: {name!r} must be one of {shown}", where=where, name=name, shown=shown)
        )
    return value


def consent_arg(where: str, name: str, value: object) -> Any:
    """``value`` if it is a :class:`~childvault.vault.Consent` whose attributes have
    the declared types (dates as ``date``, purposes a sequence of strings)."""
    from childvault.vault._consent import Consent

    consent = instance(where, name, value, Consent)
    for attr in ("by", "notice_version", "notice_sha256"):
        if not isinstance(getattr(consent, attr), str):
            raise UsageError(
                _t("{where}: {name}.{attr} must be a string", where=where, name=name, attr=attr)
            )
        _no_nul(where, f"{name}.{attr}", getattr(consent, attr))
    for attr in ("consented_at", "retain_until"):
        date_arg(where, f"{name}.{attr}", getattr(consent, attr))
    str_seq(where, f"{name}.purposes", consent.purposes)
    for attr in ("guardian_informed", "guardian_also"):
        bool_arg(where, f"{name}.{attr}", getattr(consent, attr))
    return consent


def new_records(where: str, name: str, value: object) -> None:
    """``value`` must be a sequence of :class:`~childvault.vault.NewRecordInput`."""
    from childvault.vault._svc_records import NewRecordInput

    if isinstance(value, str | bytes | bytearray) or not isinstance(value, Sequence):
        raise _refuse(where, name, _t("a list of NewRecordInput"), value)
    for i, item in enumerate(value):
        instance(where, f"{name}[{i}]", item, NewRecordInput)
        str_arg(where, f"{name}[{i}].type", item.type)
        mapping_of_str(where, f"{name}[{i}].values", item.values)
        consent_arg(where, f"{name}[{i}].consent", item.consent)
