"""The officers' console: a Starlette app over the public ``childvault.vault`` API.

Pages are rendered on the server by Jinja2 (autoescape on) and use no
JavaScript. The officer's unlocked :class:`~childvault.keys.Identity` lives in
this process only; each request opens the vault with it in a worker thread
(SQLite connections belong to one thread), from the home or through
`childvault serve`, and closes it again, one request at a time, so the console
sees what other commands wrote meanwhile.
"""

from __future__ import annotations

import functools
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from childvault._i18n import LOCALES, _t, localize, normalize_locale, translations
from childvault.console import _format
from childvault.console._security import (
    COOKIE,
    Gate,
    Guard,
    Session,
    csrf_ok,
    origin_ok,
)
from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ChildVaultError,
    DecryptionFailed,
    Identity,
    ImportFailed,
    IntegrityError,
    NotFound,
    ProviderUnavailable,
    UsageError,
    ValidationError,
    WrongPassphrase,
)
from childvault.keys._encoding import check_hex_id

#: Forms are small; anything larger is not one of ours.
MAX_BODY = 64 * 1024
#: How many of a child's most recent log entries a request page shows.
HISTORY_LIMIT = 10
#: How many ended (expired or revoked) grants the grants page lists.
ENDED_GRANTS_LIMIT = 20
#: Languages offered by the switch: the shipped catalogs, then English.
LANGUAGES = (*LOCALES, "en")


def http_status(exc: ChildVaultError) -> int:
    """The HTTP status for a library error (its message is shown as written)."""
    if isinstance(exc, UsageError | ValidationError | ImportFailed):
        return 400
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, AccessDenied | ApprovalInvalid | WrongPassphrase):
        return 403
    if isinstance(exc, IntegrityError | DecryptionFailed):
        # The vault's state contradicts its own log or keys: nothing the officer's
        # request did wrong, and nothing a retry fixes.
        return 409
    if isinstance(exc, ProviderUnavailable):
        return 503
    return 500


class _HTTPError(Exception):
    """A refusal decided by the console itself (not by the library)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class GrantView:
    """A grant as the console shows it, assembled from the log and the requests."""

    grant_id: str
    request_id: str
    requester: str
    purpose: str
    issued_at: str
    expires_at: str
    uses: int
    status: str


class Console:
    """The console application for one officer's unlocked identity."""

    def __init__(
        self,
        home: Path,
        identity: Identity,
        *,
        vault_token: str | None = None,
        lang: str = "zh_CN",
        connect: Callable[[], Any] | None = None,
    ) -> None:
        """``home``: the vault's home, or in server mode the workstation's home
        (only the identity file). ``connect``: opens the vault as ``identity``
        when it is not in ``home`` (``childvault --server URL console``); by
        default each page opens ``home``.
        """
        self.home = Path(home)
        self.identity = identity
        self.vault_token = vault_token
        self._connect = connect
        self.gate = Gate(normalize_locale(lang))
        #: The port the server is bound to (set by the runner once it is known).
        self.port = 0
        # One page at a time: an officer's console has one user, and serialising keeps
        # each page's reads and writes from interleaving with another page's.
        self._lock = threading.Lock()
        routes = [
            Route("/login", self._endpoint(_login, login=True), methods=["GET"]),
            Route("/", self._endpoint(_queue), methods=["GET"]),
            Route("/requests/{rid}", self._endpoint(_request_page), methods=["GET"]),
            Route("/requests/{rid}/approve", self._endpoint(_approve), methods=["POST"]),
            Route("/requests/{rid}/deny", self._endpoint(_deny), methods=["POST"]),
            Route("/grants", self._endpoint(_grants), methods=["GET"]),
            Route("/grants/{gid}/revoke", self._endpoint(_revoke), methods=["POST"]),
            Route("/grants/{gid}/token", self._endpoint(_download_token), methods=["POST"]),
            Route("/audit", self._endpoint(_audit), methods=["GET"]),
            Route("/rights", self._endpoint(_rights), methods=["GET"]),
            Route("/rights/{rid}/close", self._endpoint(_close_rights), methods=["POST"]),
            Route("/incidents", self._endpoint(_incidents), methods=["GET"]),
            Route("/lang", self._endpoint(_switch_lang), methods=["POST"]),
            Route("/logout", self._endpoint(_logout), methods=["POST"]),
            Route("/static/console.css", _stylesheet, methods=["GET"]),
        ]
        self.app = Starlette(
            routes=routes,
            middleware=[Middleware(Guard, port=lambda: self.port)],
            max_body_size=MAX_BODY,
        )

    def new_login_url(self) -> str:
        """A fresh one-time login URL (print it on the officer's terminal only)."""
        token = self.gate.new_login_token()
        return f"http://127.0.0.1:{self.port}/login?token={token}"

    def open_vault(self) -> Any:
        """Open the vault as the console's officer (called in a worker thread)."""
        from childvault.vault import OpenBaoCredentials, Vault

        if self._connect is not None:
            # Server mode: a new connection per page, as the local mode opens the
            # home per page, so every page shows what the server holds now.
            return self._connect()
        creds = OpenBaoCredentials(token=self.vault_token) if self.vault_token else None
        return Vault.open(self.home, identity=self.identity, credentials=creds)

    @functools.cache  # noqa: B019 (one Console per process; the cache lives as long)
    def environment(self, lang: str) -> jinja2.Environment:
        """The template environment for ``lang`` (one per language, cached)."""
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("childvault.console", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            extensions=["jinja2.ext.i18n"],
            trim_blocks=True,
            lstrip_blocks=True,
        )
        tr = translations(lang)
        env.install_gettext_translations(tr, newstyle=True)  # type: ignore[attr-defined]

        def label(table: dict[str, str], key: str | None) -> str:
            # Known values get their translated label; others (a custom schema's
            # purpose) show as they are.
            if key is None:
                return ""
            found = table.get(key)
            return tr.gettext(found) if found else _format.visible(key)

        env.filters["visible"] = _format.visible
        env.filters["local_time"] = _format.local_time
        env.globals.update(
            action_label=functools.partial(label, _format.ACTION_LABELS),
            outcome_label=functools.partial(label, _format.OUTCOME_LABELS),
            status_label=functools.partial(label, _format.STATUS_LABELS),
            sensitivity_label=functools.partial(label, _format.SENSITIVITY_LABELS),
            purpose_label=functools.partial(label, _format.PURPOSE_LABELS),
            rights_kind_label=functools.partial(label, _format.RIGHTS_KIND_LABELS),
            rights_by_label=functools.partial(label, _format.RIGHTS_BY_LABELS),
            rights_outcome_label=functools.partial(label, _format.RIGHTS_OUTCOME_LABELS),
            incident_kind_label=functools.partial(label, _format.INCIDENT_KIND_LABELS),
            audience_label=functools.partial(label, _format.AUDIENCE_LABELS),
            register_status_label=functools.partial(label, _format.REGISTER_STATUS_LABELS),
            html_lang="zh-CN" if lang == "zh_CN" else "en",
            lang=lang,
        )
        return env

    def _endpoint(
        self, view: Callable[[_View], Response], *, login: bool = False
    ) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            session_id = request.cookies.get(COOKIE)
            session = None if login else self.gate.session(session_id)
            form: dict[str, str] = {}
            page = _View(self, request, session, form, session_id)
            try:
                if not login and session is None:
                    raise _HTTPError(
                        401,
                        page.gettext(
                            "You are not logged in, or your session has ended. Open the "
                            "one-time link that `childvault console` printed; for a new "
                            "link, stop the console and start it again."
                        ),
                    )
                if request.method == "POST":
                    assert session is not None
                    if not origin_ok(
                        request.headers.get("origin"),
                        request.headers.get("sec-fetch-site"),
                        self.port,
                    ):
                        raise _HTTPError(403, page.gettext("This form came from another site."))
                    form.update(_parse_form(await request.body()))
                    if not csrf_ok(session, form.get("csrf")):
                        raise _HTTPError(
                            403, page.gettext("The form's security token is missing or wrong.")
                        )
            except _HTTPError as exc:
                return await run_in_threadpool(
                    page.error, exc.status, localize(exc.message, page.lang)
                )
            return await run_in_threadpool(self._run, view, page)

        return endpoint

    def _run(self, view: Callable[[_View], Response], page: _View) -> Response:
        with self._lock:
            try:
                return view(page)
            except _HTTPError as exc:
                return page.error(exc.status, localize(exc.message, page.lang))
            except ChildVaultError as exc:
                # Library messages are written for people and never quote a child's data;
                # shown in the session's language (English when untranslated).
                return page.error(http_status(exc), exc.localized(page.lang))
            except Exception as exc:
                # A bug: never show the exception text, it may quote a value.
                return page.error(
                    500,
                    page.gettext("Internal error (%(kind)s); please report it.")
                    % {"kind": type(exc).__name__},
                )
            finally:
                page.close()


def _parse_form(body: bytes) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (the only kind our forms send)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _HTTPError(400, _t("form data is not UTF-8")) from None
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, max_num_fields=20)
    except ValueError:
        # More fields than any of our forms has: not one of ours.
        raise _HTTPError(400, _t("too many form fields")) from None
    return dict(pairs)


class _View:
    """What a page handler works with: the request, the session, the vault, rendering."""

    def __init__(
        self,
        console: Console,
        request: Request,
        session: Session | None,
        form: dict[str, str],
        session_id: str | None,
    ) -> None:
        self.console = console
        self.request = request
        self.session = session
        self.form = form
        self.session_id = session_id
        self._vault: Any = None

    @property
    def lang(self) -> str:
        """The session's language (the console's default before login)."""
        return self.session.lang if self.session is not None else self.console.gate.default_lang

    @property
    def vault(self) -> Any:
        """The vault, opened as the officer on first use in this request."""
        if self._vault is None:
            self._vault = self.console.open_vault()
        return self._vault

    def close(self) -> None:
        """Close the vault if this request opened it."""
        if self._vault is not None:
            self._vault.close()
            self._vault = None

    def gettext(self, message: str) -> str:
        """``message`` in the session's language."""
        return translations(self.lang).gettext(message)

    def flash(self, kind: str, text: str) -> None:
        """Show ``text`` once on the next page."""
        if self.session is not None:
            self.session.flashes.append((kind, text))

    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        """Render a page in the session's language."""
        env = self.console.environment(self.lang)
        flashes: list[tuple[str, str]] = []
        if self.session is not None:
            flashes, self.session.flashes = self.session.flashes, []
        html = env.get_template(template).render(
            officer=self.console.identity.name,
            csrf=self.session.csrf if self.session is not None else "",
            logged_in=self.session is not None,
            flashes=flashes,
            here=self.request.url.path,
            languages=LANGUAGES,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def error(self, status: int, message: str) -> Response:
        """An error page with the library's (or the console's) message."""
        return self.render("error.html", status=status, status_code=status, message=message)

    def redirect(self, path: str) -> Response:
        """See Other: after a POST, the browser loads ``path`` with GET."""
        return RedirectResponse(path, status_code=303)

    def int_field(self, name: str, label: str) -> int:
        """A whole-number form field, or a 400 naming it."""
        raw = self.form.get(name, "").strip()
        try:
            return int(raw)
        except ValueError:
            raise _HTTPError(
                400, self.gettext("%(field)s must be a whole number.") % {"field": label}
            ) from None


# ------------------------------------------------------------------------ pages


def _login(page: _View) -> Response:
    token = page.request.query_params.get("token", "")
    session_id = page.console.gate.redeem(token) if token else None
    if session_id is None:
        return page.error(
            403,
            page.gettext(
                "This login link was already used or has expired. Stop the console and "
                "start it again for a new one."
            ),
        )
    response = page.redirect("/")
    response.set_cookie(
        COOKIE, session_id, httponly=True, samesite="strict", path="/", secure=False
    )
    return response


def _queue(page: _View) -> Response:
    pending = sorted(page.vault.requests("pending"), key=lambda r: r.created_at)
    return page.render("queue.html", requests=pending, field_label=_field_labels(page.vault))


def _request_page(page: _View) -> Response:
    rid = check_hex_id(page.request.path_params["rid"], "request")
    req = _find_request(page.vault, rid)
    return _render_request(page, req)


def _render_request(page: _View, req: Any, status: int = 200) -> Response:
    vault = page.vault
    records: list[tuple[str, Any, str | None]] = []
    for record_id in req.records:
        try:
            records.append((record_id, vault.record_info(record_id), None))
        except NotFound as exc:
            records.append((record_id, None, exc.localized(page.lang)))
    history = _history(vault, req.records)
    fields = []
    for name in req.fields:
        spec = _field_spec(vault, [info for _, info, _ in records if info is not None], name)
        chinese, english = _format.split_label(spec.description) if spec else (name, name)
        fields.append(
            {
                "name": name,
                "chinese": chinese,
                "english": english,
                "sensitivity": spec.sensitivity if spec else None,
            }
        )
    grants = [g for g in _grant_views(vault, [req]) if g.request_id == req.id]
    max_ttl_min = max(1, int(vault.setting("max_ttl_s")) // 60)
    default_ttl_min = min(max_ttl_min, max(1, int(vault.setting("default_ttl_s")) // 60))
    return page.render(
        "request.html",
        status=status,
        req=req,
        records=records,
        history=history,
        fields=fields,
        grants=grants,
        own_request=req.requester == vault.user,
        max_ttl_min=max_ttl_min,
        default_ttl_min=default_ttl_min,
        max_uses=int(vault.setting("max_uses")),
        history_limit=HISTORY_LIMIT,
    )


def _approve(page: _View) -> Response:
    rid = check_hex_id(page.request.path_params["rid"], "request")
    minutes = page.int_field("ttl_minutes", page.gettext("Valid for (minutes)"))
    uses = page.int_field("uses", page.gettext("Uses"))
    if minutes < 1:
        raise _HTTPError(
            400, page.gettext("Valid for (minutes)") + ": " + page.gettext("at least 1")
        )
    approval = page.vault.approve(rid, ttl=timedelta(minutes=minutes), uses=uses)
    assert page.session is not None
    # Kept briefly so the officer can also save it as a file, once; never written to disk here.
    page.session.tokens[approval.grant_id] = (approval.token, time.monotonic())
    return page.render("approved.html", approval=approval)


def _deny(page: _View) -> Response:
    rid = check_hex_id(page.request.path_params["rid"], "request")
    page.vault.deny(rid, page.form.get("reason", ""))
    page.flash("ok", page.gettext("The request was denied."))
    return page.redirect(f"/requests/{rid}")


def _grants(page: _View) -> Response:
    vault = page.vault
    views = _grant_views(vault, vault.requests("approved"))
    active = [g for g in views if g.status == "active"]
    ended = [g for g in views if g.status != "active"][:ENDED_GRANTS_LIMIT]
    return page.render("grants.html", active=active, ended=ended)


def _revoke(page: _View) -> Response:
    gid = check_hex_id(page.request.path_params["gid"], "grant")
    page.vault.revoke(gid)
    if page.session is not None:
        page.session.tokens.pop(gid, None)
    page.flash("ok", page.gettext("The grant was revoked: its token no longer opens anything."))
    back = page.form.get("next", "")
    return page.redirect(back if _local_path(back) else "/grants")


def _download_token(page: _View) -> Response:
    gid = check_hex_id(page.request.path_params["gid"], "grant")
    assert page.session is not None
    token = page.session.take_token(gid, time.monotonic())
    if token is None:
        raise _HTTPError(
            404,
            page.gettext(
                "This token can no longer be saved: it is offered once, for ten minutes "
                "after the approval."
            ),
        )
    return PlainTextResponse(
        token + "\n",
        headers={"content-disposition": f'attachment; filename="grant-{gid}.token"'},
    )


def _audit(page: _View) -> Response:
    try:
        report = page.vault.verify_audit()
    except IntegrityError as exc:
        return page.render("audit.html", status=409, report=None, failure=exc.localized(page.lang))
    return page.render("audit.html", report=report, failure=None)


def _rights(page: _View) -> Response:
    # Read-only: the register as `childvault rights list` shows it (and logs it).
    entries = sorted(page.vault.rights_list(), key=lambda r: (r.status != "open", r.deadline))
    return page.render("rights.html", entries=entries)


def _close_rights(page: _View) -> Response:
    # The library checks the outcome, the reason a refusal needs and the link a
    # correction needs; its refusal is shown as for every decision.
    rid = check_hex_id(page.request.path_params["rid"], "rights request")
    reason = page.form.get("reason", "").strip() or None
    page.vault.rights_close(rid, page.form.get("outcome", ""), reason=reason)
    page.flash("ok", page.gettext("The rights request was closed."))
    return page.redirect("/rights")


def _incidents(page: _View) -> Response:
    # Read-only: the register as `childvault incident list` shows it (and logs it).
    entries = sorted(page.vault.incidents(), key=lambda i: i.discovered, reverse=True)
    return page.render("incidents.html", entries=entries)


def _switch_lang(page: _View) -> Response:
    wanted = page.form.get("lang", "")
    if page.session is not None and wanted in LANGUAGES:
        page.session.lang = wanted
    back = page.form.get("next", "")
    return page.redirect(back if _local_path(back) else "/")


def _logout(page: _View) -> Response:
    page.console.gate.end(page.session_id)
    response = page.render("logged_out.html")
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def _stylesheet(request: Request) -> Response:
    return Response(_css(), media_type="text/css; charset=utf-8")


@functools.cache
def _css() -> bytes:
    import importlib.resources

    return (
        importlib.resources.files("childvault.console").joinpath("static/console.css").read_bytes()
    )


# ----------------------------------------------------------------------- helpers


def _local_path(value: str) -> bool:
    """Whether a ``next`` target stays on this console (no open redirect)."""
    return value.startswith("/") and not value.startswith("//") and "\\" not in value


def _find_request(vault: Any, rid: str) -> Any:
    for req in vault.requests(None):
        if req.id == rid:
            return req
    raise NotFound(_t("no request {rid}", rid=rid))


def _field_labels(vault: Any) -> Callable[[str], str]:
    """Field name -> its Chinese label, from any record type that declares it."""
    labels: dict[str, str] = {}
    for rtype in vault.schema.types.values():
        for name, spec in rtype.fields.items():
            labels.setdefault(name, _format.split_label(spec.description)[0])
    return lambda name: labels.get(name, name)


def _field_spec(vault: Any, infos: list[Any], name: str) -> Any:
    """The schema's declaration of field ``name`` for the request's record types."""
    types = [info.type for info in infos] or list(vault.schema.types)
    for type_name in types:
        rtype = vault.schema.types.get(type_name)
        if rtype is not None and name in rtype.fields:
            return rtype.fields[name]
    return None


def _history(vault: Any, records: tuple[str, ...]) -> dict[str, list[dict[str, Any]]]:
    """The most recent log entries about each record, newest first (one log pass)."""
    wanted = set(records)
    found: dict[str, list[dict[str, Any]]] = {r: [] for r in records}
    for item in vault.audit_entries():
        entry = item["entry"]
        for record_id in wanted.intersection(entry.get("records") or ()):
            found[record_id].append(entry)
    return {r: list(reversed(entries[-HISTORY_LIMIT:])) for r, entries in found.items()}


def _grant_views(vault: Any, approved: list[Any]) -> list[GrantView]:
    """Grants of the given requests, from their approval and revocation log entries.

    The public API has no grant listing: the log is where grants are recorded.
    Newest first.
    """
    by_request = {r.id: r for r in approved}
    issued: dict[str, dict[str, Any]] = {}
    revoked: set[str] = set()
    for item in _entries(vault):
        grant = item.get("grant")
        if not grant or item.get("outcome") != "ok":
            continue
        if item.get("action") == "request.approve" and item.get("request") in by_request:
            issued[grant] = item
        elif item.get("action") == "grant.revoke":
            revoked.add(grant)
    now = datetime.now(UTC)
    views = []
    for grant, item in issued.items():
        req = by_request[item["request"]]
        detail = item.get("detail") or {}
        expires = str(detail.get("expires", ""))
        moment = _format.parse_time(expires)
        if grant in revoked:
            status = "revoked"
        elif moment is not None and moment <= now:
            status = "expired"
        else:
            status = "active"
        views.append(
            GrantView(
                grant,
                req.id,
                req.requester,
                req.purpose,
                str(item.get("ts", "")),
                expires,
                int(detail.get("uses", 1)),
                status,
            )
        )
    views.sort(key=lambda g: g.issued_at, reverse=True)
    return views


def _entries(vault: Any) -> Iterator[dict[str, Any]]:
    for item in vault.audit_entries():
        yield item["entry"]
