"""The HTTP connection to Vault/OpenBao: one session, login, error mapping.

hvac and requests are imported here (and in no module that ``childvault.keys``
loads eagerly). Every request goes through :meth:`Connection.call`, which maps
failures to the childvault errors (:class:`ProviderUnavailable`,
:class:`AccessDenied`, :class:`ConfigError`) and never puts a token, DEK, salt
or plaintext into a message: server text kept for the audit-log detail passes
through :func:`scrub` first.

High availability (a Raft cluster, docs/scale.md section 6): ``VAULT_ADDR`` may
list several nodes, comma-separated. A request goes to the node that answered
last, then to the others. Redirects (307 from a standby) are followed by hand,
and only to a configured node, so the token is never sent anywhere else. During
a leader election a request that was certainly not executed (connection
refused, a redirect to a dead or unknown node, ``500 ... not active``, an
unsealed ``503``) is tried on the next node, with exponential backoff between
rounds, for at most :data:`HA_WAIT_S`; then :class:`ProviderUnavailable`
(exit 5) names every node tried. A request that may have been executed (the
connection dropped after sending a write) is never re-sent: it fails cleanly,
as before, and the caller resumes.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import hvac
import requests
from hvac.adapters import RawAdapter
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter

from childvault._i18n import Message, _t, join
from childvault.keys._errors import AccessDenied, ConfigError, ProviderUnavailable
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["HA_WAIT_S", "Connection", "Reply", "scrub"]

#: How long a request keeps looking for an active node during a leader election.
#: OpenBao elects a new leader in about 2 s on loopback (docs/scale.md section 5).
HA_WAIT_S = 30.0
#: First pause between rounds over the nodes; doubled each round up to the cap.
_BACKOFF_FIRST_S = 0.1
_BACKOFF_CAP_S = 2.0
#: Redirects followed for one request (a standby points at the leader: one is enough).
_MAX_HOPS = 3
_REDIRECTS = (301, 302, 303, 307, 308)
#: Idempotent methods: re-sent after any connection failure, not only a refused one.
_IDEMPOTENT = ("GET", "HEAD", "LIST")

# Things that look like Vault tokens or long base64 runs (ciphertexts, salts,
# keys): removed from any server text we keep for the audit-log detail.
_SCRUB_RE = re.compile(r"\b(?:hv[sbr]|[sbr])\.[A-Za-z0-9._-]{8,}|[A-Za-z0-9+/=_-]{24,}")


def scrub(errors: Any) -> str | None:
    """Server error texts joined, cut to 500 characters, tokens and base64 runs removed."""
    if not isinstance(errors, list) or not errors:
        return None
    text = "; ".join(str(e).strip() for e in errors)[:500]
    return _SCRUB_RE.sub("[redacted]", text)


@dataclass(frozen=True)
class Reply:
    """A server answer with an accepted status: the status and the JSON object."""

    status: int
    data: dict[str, Any]


class Connection:
    """One hvac client on one reused ``requests.Session``, with error mapping."""

    def __init__(
        self,
        settings: VaultSettings,
        *,
        token: str | None,
        approle: tuple[str, str] | None,
    ) -> None:
        self.settings = settings
        #: The configured nodes (``VAULT_ADDR`` may list several); the only
        #: places a token is sent to.
        self.nodes: tuple[str, ...] = tuple(_origin(a) for a in settings.addr.split(","))
        self._preferred = 0
        #: See :data:`HA_WAIT_S` (an attribute so an embedding can shorten it).
        self.ha_wait = HA_WAIT_S
        self.session = requests.Session()
        # Shared by the salt workers (SaltStore.for_records) rather than one
        # session each, so every request still goes through this one session.
        # Concurrent use is safe here: each request carries its own headers
        # (the token too; session.headers is never changed after this), Vault
        # sets no cookies (and the cookie jar is locked anyway), and connections
        # come from urllib3's thread-safe pool, sized for every worker so that
        # connections are reused rather than discarded ("connection pool is full").
        pool = max(DEFAULT_POOLSIZE, settings.salt_workers)
        for scheme in ("https://", "http://"):
            self.session.mount(scheme, HTTPAdapter(pool_maxsize=pool))
        # The token is sent per request (not stored on the adapter) so that
        # unauthenticated calls (health, login) never carry it.
        self.client: Any = hvac.Client(
            url=self.nodes[0],
            token="",
            verify=settings.cacert or True,
            timeout=settings.timeout,
            namespace=settings.namespace,
            session=self.session,
            adapter=RawAdapter,
        )
        self._token = token or None
        self._approle = approle
        # Serialises AppRole logins: workers whose token expired together log
        # in once, not once each.
        self._token_lock = threading.Lock()

    @property
    def addr(self) -> str:
        """The server address (for messages)."""
        return self.settings.addr

    def close(self) -> None:
        """Close the HTTP session (and its pooled connections)."""
        self.session.close()

    # -- login -------------------------------------------------------------

    def _login(self) -> str:
        assert self._approle is not None
        role_id, secret_id = self._approle
        path = f"auth/{self.settings.approle_mount}/login"
        resp = self._send("POST", path, {"role_id": role_id, "secret_id": secret_id}, None, None)
        if resp.status_code in (400, 401, 403):
            raise ProviderUnavailable(
                _t(
                    "AppRole login at {addr} ({path}) failed: the role id or secret "
                    "id is wrong, expired or used up; get a new secret id and log in "
                    "again",
                    addr=self.addr,
                    path=path,
                ),
                detail=scrub(self._errors(resp)),
            )
        data = self._check(resp, "POST", path, ok=(200,), need=None)
        auth = data.get("auth")
        token = auth.get("client_token") if isinstance(auth, dict) else None
        if not isinstance(token, str) or not token:
            raise ProviderUnavailable(
                _t("AppRole login at {addr} ({path}) returned no token", addr=self.addr, path=path)
            )
        self._token = token
        return token

    def _ensure_token(self) -> str:
        with self._token_lock:
            if self._token:
                return self._token
            if self._approle is not None:
                return self._login()
        raise ProviderUnavailable(
            _t(
                "no Vault token for {addr}: set VAULT_TOKEN (log in with `bao "
                "login`) or configure an AppRole login",
                addr=self.addr,
            )
        )

    def _forget_token(self, token: str | None) -> None:
        # Only the token that was refused: another worker may have logged in anew.
        with self._token_lock:
            if self._token == token:
                self._token = None

    def token_valid(self) -> bool:
        """Whether the current token is accepted by the server (lookup-self)."""
        token = self._ensure_token()
        resp = self._send("GET", "auth/token/lookup-self", None, None, token)
        if resp.status_code == 200:
            return True
        if resp.status_code in (401, 403):
            return False
        self._check(resp, "GET", "auth/token/lookup-self", ok=(200,), need=None)
        return True

    # -- requests ------------------------------------------------------------

    def _send(
        self,
        method: str,
        path: str,
        body: Any,
        wrap_ttl: str | None,
        token: str | None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        headers = {"X-Vault-Request": "true"}
        if token:
            headers["X-Vault-Token"] = token
        if self.settings.namespace:
            headers["X-Vault-Namespace"] = self.settings.namespace
        if wrap_ttl:
            headers["X-Vault-Wrap-TTL"] = wrap_ttl
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        if params:
            kwargs["params"] = dict(params)
        where = f"{method} {path}"
        single = len(self.nodes) == 1
        deadline = time.monotonic() + self.ha_wait
        pause = _BACKOFF_FIRST_S
        while True:
            tried: list[Message] = []
            last_sealed: requests.Response | None = None
            election = False
            first = self._preferred
            for i in range(len(self.nodes)):
                index = (first + i) % len(self.nodes)
                node = self.nodes[index]
                resp, why = self._try_node(node, method, path, kwargs, single=single)
                if resp is None:
                    tried.append(_t("{node} ({why})", node=node, why=why))
                    election = True
                    continue
                if resp.status_code == 503 and "sealed" in str(self._errors(resp)).lower():
                    # Sealed: not an election; another node may still answer.
                    tried.append(_t("{node} (sealed)", node=node))
                    last_sealed = resp
                    continue
                if _electing(resp, self._errors(resp)) and not (single and resp.status_code == 503):
                    # (One node answering 503 keeps its immediate "standby" message.)
                    tried.append(
                        _t(
                            "{node} (HTTP {status}: no active node)",
                            node=node,
                            status=resp.status_code,
                        )
                    )
                    election = True
                    continue
                self._preferred = index
                return resp
            if not election and last_sealed is not None:
                return last_sealed  # every node sealed: the sealed message says what to do
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProviderUnavailable(
                    _t(
                        "no active Vault node answered within {ha_wait:g} s "
                        "({where}); tried: {tried}. Check the cluster (`bao operator "
                        "raft list-peers`) and VAULT_ADDR",
                        ha_wait=self.ha_wait,
                        where=where,
                        tried=join("; ", tried),
                    )
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _BACKOFF_CAP_S)

    def _try_node(
        self, node: str, method: str, path: str, kwargs: dict[str, Any], *, single: bool
    ) -> tuple[requests.Response | None, str]:
        """One node's answer, following redirects to configured nodes only.

        (None, why) when the request certainly did not run there (so it may
        go to another node); raises when it may have run or the failure is not
        a cluster's (TLS, a timeout on a write).
        """
        url = f"{node}/v1/{path}"
        for _hop in range(_MAX_HOPS + 1):
            try:
                resp: requests.Response = self.session.request(
                    method,
                    url,
                    timeout=self.settings.timeout,
                    verify=self.settings.cacert or True,
                    allow_redirects=False,
                    **kwargs,
                )
            except requests.exceptions.SSLError as exc:
                raise ProviderUnavailable(
                    _t(
                        "TLS connection to the Vault server at {node} failed "
                        "({method} {path}): check that VAULT_CACERT names the CA "
                        "that signed the server certificate and that VAULT_ADDR uses "
                        "the right host name",
                        node=node,
                        method=method,
                        path=path,
                    )
                ) from exc
            except requests.exceptions.RequestException as exc:
                if not single and (_not_sent(exc) or method in _IDEMPOTENT):
                    return None, _t("not reachable")
                if not single and isinstance(exc, requests.exceptions.ConnectionError):
                    # A cluster node (typically the leader, killed) dropped a
                    # write it had received: it may have run, so it is not
                    # re-sent. "Is the server running?" would mislead here: the
                    # other nodes carry on, a rerun goes to the new leader.
                    where = method + " " + path
                    raise ProviderUnavailable(
                        _t(
                            "the Vault node {node} dropped the connection after receiving "
                            "{where}: it may have been applied, so it was not sent again; "
                            "run the command again (an import resumes where it stopped)",
                            node=node,
                            where=where,
                        )
                    ) from exc
                raise self._unreachable(exc, node, f"{method} {path}") from exc
            if resp.status_code not in _REDIRECTS or not resp.headers.get("Location"):
                return resp, ""
            target = urljoin(url, resp.headers["Location"])
            if _origin(target) not in self.nodes:
                # Never follow with the token to a node not configured here.
                return None, _t("redirected to {origin}, not in VAULT_ADDR", origin=_origin(target))
            url = target
        return None, _t("too many redirects")

    def _unreachable(self, exc: Exception, node: str, where: str) -> ProviderUnavailable:
        if isinstance(exc, requests.exceptions.Timeout):
            return ProviderUnavailable(
                _t(
                    "the Vault server at {node} did not answer within {timeout:g} s "
                    "({where}): is it running and reachable? check VAULT_ADDR and "
                    "the network",
                    node=node,
                    timeout=self.settings.timeout,
                    where=where,
                )
            )
        if isinstance(exc, requests.exceptions.ConnectionError):
            return ProviderUnavailable(
                _t(
                    "cannot reach the Vault server at {node} ({where}): is the "
                    "server running? check VAULT_ADDR",
                    node=node,
                    where=where,
                )
            )
        return ProviderUnavailable(
            _t(
                "request to the Vault server at {node} failed ({where}): check "
                "VAULT_ADDR and VAULT_CACERT",
                node=node,
                where=where,
            )
        )

    @staticmethod
    def _errors(resp: requests.Response) -> Any:
        try:
            doc = resp.json()
        except ValueError:
            return None
        return doc.get("errors") if isinstance(doc, dict) else None

    def _check(
        self,
        resp: requests.Response,
        method: str,
        path: str,
        *,
        ok: Collection[int],
        need: tuple[str, str] | None,
    ) -> dict[str, Any]:
        status = resp.status_code
        where = f"{method} {path}"
        if status in ok:
            if status == 204 or not resp.content:
                return {}
            try:
                doc = resp.json()
            except ValueError:
                doc = None
            if not isinstance(doc, dict):
                raise ProviderUnavailable(
                    _t(
                        "unexpected answer from the Vault server at {addr} "
                        "({where}): is VAULT_ADDR really a Vault/OpenBao server?",
                        addr=self.addr,
                        where=where,
                    )
                )
            return doc
        errors = self._errors(resp)
        detail = scrub(errors)
        if status == 503:
            if "sealed" in str(errors).lower():
                raise ProviderUnavailable(
                    _t(
                        "the Vault server at {addr} is sealed ({where}): unseal it "
                        "(`bao operator unseal`) and try again",
                        addr=self.addr,
                        where=where,
                    ),
                    detail=detail,
                )
            raise ProviderUnavailable(
                _t(
                    "the Vault server at {addr} is unavailable ({where}): it may be "
                    "a standby without an active node, or in maintenance; try again "
                    "later",
                    addr=self.addr,
                    where=where,
                ),
                detail=detail,
            )
        if status == 403:
            capability, who = need or ("access", "a childvault policy")
            raise AccessDenied(
                _t(
                    "this token lacks {capability} on {path}: it needs {who} (run "
                    "`childvault doctor` to see what the token may do)",
                    capability=capability,
                    path=path,
                    who=who,
                ),
                detail=detail,
            )
        if status == 401:
            raise ProviderUnavailable(
                _t(
                    "the Vault server at {addr} refused the token ({where}): log in "
                    "again / renew VAULT_TOKEN",
                    addr=self.addr,
                    where=where,
                ),
                detail=detail,
            )
        if status == 429:
            raise ProviderUnavailable(
                _t(
                    "the Vault server at {addr} is rate-limiting requests ({where}): "
                    "try again later",
                    addr=self.addr,
                    where=where,
                ),
                detail=detail,
            )
        if (
            status == 404
            and isinstance(errors, list)
            and any("no handler for route" in str(e) for e in errors)
        ):
            raise ConfigError(
                _t(
                    "the Vault server at {addr} has nothing mounted at {path}: run "
                    "`childvault vault setup` (or check the mount names in the "
                    "settings)",
                    addr=self.addr,
                    path=path,
                ),
                detail=detail,
            )
        raise ProviderUnavailable(
            _t(
                "the Vault server at {addr} refused {where} (HTTP {status}); run "
                "`childvault doctor` for details",
                addr=self.addr,
                where=where,
                status=status,
            ),
            detail=detail,
        )

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        wrap_ttl: str | None = None,
        params: Mapping[str, str] | None = None,
        ok: Collection[int] = (200, 204),
        need: tuple[str, str] | None = None,
        auth: bool = True,
    ) -> Reply:
        """Send one request; return the JSON reply for a status in ``ok``, else raise.

        ``need`` is ``(capability, policy)`` for the permission-denied message.
        A 403 is first checked against the token itself: an expired or revoked
        token is a login problem (ProviderUnavailable), not a policy one.
        """
        for attempt in (0, 1):
            token = self._ensure_token() if auth else None
            resp = self._send(method, path, body, wrap_ttl, token, params)
            if (
                resp.status_code == 403
                and auth
                and resp.status_code not in ok
                and not self.token_valid()
            ):
                if self._approle is not None and attempt == 0:
                    # The AppRole token expired: log in once more and retry.
                    # A 403 means the request was not executed, so a retry
                    # cannot apply it twice.
                    self._forget_token(token)
                    continue
                raise ProviderUnavailable(
                    _t(
                        "the Vault server at {addr} refused the token ({method} "
                        "{path}): it is invalid, revoked or expired; log in again / "
                        "renew VAULT_TOKEN",
                        addr=self.addr,
                        method=method,
                        path=path,
                    )
                )
            return Reply(resp.status_code, self._check(resp, method, path, ok=ok, need=need))
        raise AssertionError("unreachable")  # pragma: no cover


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL (the identity of a node)."""
    parts = urlsplit(url.strip())
    return f"{parts.scheme}://{parts.netloc}".lower()


def _electing(resp: requests.Response, errors: Any) -> bool:
    """Whether an answer means "no active node right now" (the request was not run)."""
    if resp.status_code == 500:
        text = str(errors).lower()
        return "not active" in text or "active cluster node not found" in text
    # 503 without "sealed" (checked before): a standby with no leader to forward to.
    return resp.status_code == 503


def _not_sent(exc: Exception) -> bool:
    """Whether a connection failure happened before the request reached a server."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    reason = exc.args[0] if exc.args else None
    inner = getattr(reason, "reason", reason)
    # urllib3: a refused or failed connect (nothing was sent on it).
    return type(inner).__name__ in (
        "NewConnectionError",
        "NameResolutionError",
        "ConnectTimeoutError",
    )
