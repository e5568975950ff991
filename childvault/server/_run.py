"""Run the server on uvicorn with the transport rules of docs/server.md.

- Loopback by default. Any other address needs TLS (``tls_cert`` and
  ``tls_key``) or an explicit ``behind_proxy=True`` (a reverse proxy on the
  same host terminates TLS); otherwise :class:`UsageError`, before anything
  is bound.
- Slow clients are bounded: the request head by ``header_timeout`` and
  ``DEFAULT_MAX_HEAD`` bytes, idle kept-alive connections by
  ``keep_alive_timeout``, the body by the app's :class:`LimitsMiddleware`.
- Only requests whose ``Host`` names the server are answered: the bound
  address (and ``localhost`` for a loopback bind) and ``allowed_hosts``
  (``serve --allowed-host``); others get 400 ``host`` (DNS rebinding,
  :mod:`._hosts`). A wildcard bind (``0.0.0.0``) needs ``allowed_hosts``.
- SIGTERM / SIGINT: uvicorn stops accepting, lets in-flight requests finish
  for at most ``shutdown_timeout`` seconds, then closes what is left.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from childvault._i18n import _t
from childvault.keys import UsageError
from childvault.server._common import ASGIApp
from childvault.server._hosts import AllowedHosts
from childvault.server._limits import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_HEAD,
    header_timeout_protocol,
)

DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_KEEP_ALIVE_TIMEOUT = 5
DEFAULT_SHUTDOWN_TIMEOUT = 30


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (``[v6]:PORT`` for IPv6); raise :class:`UsageError` if malformed."""
    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise UsageError(
            _t(
                "invalid listen address {listen!r}: use HOST:PORT, e.g. 127.0.0.1:8443",
                listen=listen,
            )
        )
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    port = int(port_text)
    if port > 65535:
        raise UsageError(_t("invalid port {port} in {listen!r}", port=port, listen=listen))
    return host, port


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        # A host name other than localhost may resolve anywhere.
        return False


def server_config(
    app: ASGIApp,
    listen: str = DEFAULT_LISTEN,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    behind_proxy: bool = False,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT,
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT,
    allowed_hosts: Sequence[str] = (),
) -> uvicorn.Config:
    """The uvicorn configuration :func:`run` uses, after checking the transport rules."""
    host, port = parse_listen(listen)
    if (tls_cert is None) != (tls_key is None):
        raise UsageError(_t("TLS needs both a certificate (--tls-cert) and its key (--tls-key)"))
    tls = tls_cert is not None
    if not is_loopback(host) and not tls and not behind_proxy:
        raise UsageError(
            _t(
                "refusing to listen on {host} without TLS: give --tls-cert and --tls-key, or "
                "--behind-proxy if a reverse proxy on this host terminates TLS",
                host=host,
            )
        )
    hosts = AllowedHosts.for_listen(host, port, allowed_hosts)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert is not None else None,
        ssl_keyfile=str(tls_key) if tls_key is not None else None,
        http=header_timeout_protocol(header_timeout, hosts),
        h11_max_incomplete_event_size=DEFAULT_MAX_HEAD,
        timeout_keep_alive=keep_alive_timeout,
        timeout_graceful_shutdown=shutdown_timeout,
        # Our own structured access log replaces uvicorn's, which prints
        # query strings.
        access_log=False,
        # Client addresses from X-Forwarded-For only when a proxy is declared
        # (and then only from the addresses uvicorn trusts by default).
        proxy_headers=behind_proxy,
        server_header=False,
        lifespan="off",
        loop="asyncio",
        ws="none",
    )


def run(
    app: ASGIApp,
    listen: str = DEFAULT_LISTEN,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    behind_proxy: bool = False,
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive_timeout: int = DEFAULT_KEEP_ALIVE_TIMEOUT,
    shutdown_timeout: int = DEFAULT_SHUTDOWN_TIMEOUT,
    allowed_hosts: Sequence[str] = (),
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (see module doc); :class:`UsageError` on bad settings."""
    config = server_config(
        app,
        listen,
        tls_cert,
        tls_key,
        behind_proxy,
        header_timeout=header_timeout,
        keep_alive_timeout=keep_alive_timeout,
        shutdown_timeout=shutdown_timeout,
        allowed_hosts=allowed_hosts,
    )
    uvicorn.Server(config).run()
