"""Which ``Host`` header values the server answers (DNS-rebinding defence).

A web page on an attacker's domain whose name is then pointed at the server's
address (DNS rebinding) makes a browser send requests there that carry the
attacker's name in ``Host``. The server answers only the names it is reachable
as: the address it is bound to, ``localhost`` (and the loopback addresses) for
a loopback bind, and the names given with ``serve --allowed-host``. A request
head with no ``Host``, two, or another one is refused before h11 parses it
(``_limits.head_refusal``, reason ``host``), like the other refused heads.

A ``Host`` without a port is accepted for an allowed name (a proxy in front
usually passes the public name without one); with a port, the port must be the
one the server listens on, or the one given with the name (``NAME:PORT``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from childvault._i18n import _t
from childvault.keys import UsageError

#: A DNS name as ``Host`` may carry it (letters, digits, hyphens, dots; no
#: trailing dot, no underscore), lower case once compared.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
#: Addresses that mean "every interface": no client names the server by them.
_WILDCARD = frozenset({"0.0.0.0", "::"})  # noqa: S104 (compared with, never bound)


def _canonical(name: str) -> str | None:
    """``name`` as compared: an IP address in its compressed form, a DNS name in
    lower case; None if it is neither."""
    text = name.lower()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text if len(text) <= 253 and _NAME.fullmatch(text) else None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        return None  # a zone names an interface of the client, never this server
    return address.compressed


def split_host(value: str) -> tuple[str, int | None] | None:
    """A ``Host`` value (RFC 9110 section 7.2: ``uri-host [":" port]``) as its
    canonical name and port, or None if malformed.

    An IPv6 address must be in brackets; a port is decimal digits without a
    leading zero; user information, a path or a zone are refused.
    """
    if value.startswith("["):
        close = value.find("]")
        if close < 0:
            return None
        inner, rest = value[1:close], value[close + 1 :]
        try:
            if not isinstance(ipaddress.ip_address(inner), ipaddress.IPv6Address):
                return None
        except ValueError:
            return None
        name: str | None = _canonical(inner)
    else:
        inner, sep, port_text = value.partition(":")
        rest = sep + port_text
        name = _canonical(inner)
        if name is not None and ":" in name:
            return None  # an IPv6 address without brackets
    if name is None:
        return None
    if not rest:
        return name, None
    port_text = rest[1:]
    if (
        rest[0] != ":"
        or not port_text.isascii()
        or not port_text.isdigit()
        or port_text != str(int(port_text))
        or int(port_text) > 65535
    ):
        return None
    return name, int(port_text)


def _loopback(name: str) -> bool:
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a DNS name other than localhost may resolve anywhere


class AllowedHosts:
    """The ``Host`` values one server answers: canonical names, each with its ports."""

    def __init__(self, names: dict[str, frozenset[int]]) -> None:
        self.names = names
        # The usual spellings (lower case, as the head check passes them), so a
        # request's Host is one set lookup; other spellings of an address are
        # parsed (ipaddress is a few microseconds).
        exact = set()
        for name, ports in names.items():
            shown = f"[{name}]" if ":" in name else name
            exact.add(shown.encode())
            exact.update(f"{shown}:{port}".encode() for port in ports)
        self._exact = frozenset(exact)

    @classmethod
    def for_listen(cls, host: str, port: int, extra: Iterable[str] = ()) -> AllowedHosts:
        """The names a server listening on ``host:port`` answers, plus ``extra``
        (``NAME`` or ``NAME:PORT``, e.g. from ``serve --allowed-host``).

        :class:`UsageError` for a malformed ``extra`` name, and for a wildcard
        bind (``0.0.0.0``, ``::``) without any: nobody reaches the server by
        those addresses, so the names it is reached by must be given.
        """
        names: dict[str, set[int]] = {}

        def add(name: str, at: int) -> None:
            names.setdefault(name, set()).add(at)

        for text in extra:
            parsed = split_host(text.strip())
            if parsed is None or not text.strip():
                raise UsageError(
                    _t(
                        "invalid --allowed-host {name!r}: give a host name or address, "
                        "optionally with :PORT (an IPv6 address in brackets)",
                        name=text,
                    )
                )
            add(parsed[0], port if parsed[1] is None else parsed[1])
        bound = _canonical(host)
        if bound is None or bound in _WILDCARD:
            if not names:
                raise UsageError(
                    _t(
                        "listening on {host} needs --allowed-host NAME (repeatable): the names "
                        "clients reach this server by; other Host headers are refused",
                        host=host,
                    )
                )
        else:
            add(bound, port)
            if _loopback(bound):
                # Names that only ever mean this machine: no rebinding through them.
                for name in ("localhost", "127.0.0.1", "::1"):
                    add(name, port)
        return cls({name: frozenset(ports) for name, ports in names.items()})

    def accepts(self, value: bytes) -> bool:
        """Whether one ``Host`` field value (as sent, around spaces allowed) names this server."""
        value = value.strip(b" \t")
        if value.lower() in self._exact:
            return True
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            return False
        parsed = split_host(text)
        if parsed is None:
            return False
        ports = self.names.get(parsed[0])
        return ports is not None and (parsed[1] is None or parsed[1] in ports)


def host_refused(lower: bytes, hosts: AllowedHosts) -> bool:
    """Whether a request head (lower-cased, CRLF line ends, checked by
    ``head_refusal`` otherwise) must be refused for its ``Host``: none, more than
    one, or one that does not name this server."""
    if lower.count(b"\r\nhost:") != 1:
        return True
    start = lower.find(b"\r\nhost:") + len(b"\r\nhost:")
    return not hosts.accepts(lower[start : lower.find(b"\r\n", start)])


__all__ = ["AllowedHosts", "host_refused", "split_host"]
