"""Shared CLI plumbing: the context handed to every command, passphrases,
output, argument parsers shared by several command modules, and the calls
that open or create a vault (docs/architecture.md).

Every call that depends on how the library is opened or initialised (the
``Vault.open`` and ``Vault.init`` signatures, provider settings, the Vault
server setup) lives here and nowhere else, so a change of those signatures is
absorbed in this one module. Library errors become messages and exit codes in
:class:`childvault.cli.main._Group`.

Nothing here imports the library at module level, so ``childvault --help``
stays fast; the functions import it when they run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from childvault.vault import Vault

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED, EXIT_INTEGRITY, EXIT_PROVIDER = range(6)

#: Largest ``--grant @FILE`` / ``@-`` accepted: an approval token is far smaller.
MAX_GRANT_FILE = 1 << 20


def _(message: str) -> str:
    """The one function every human message of the CLI goes through.

    ``message`` translated by the catalog of the locale chosen by ``LC_ALL`` /
    ``LC_MESSAGES`` / ``LANG`` (childvault._i18n), read when the message is
    shown; English, the source language, when there is no translation.
    Messages are ``str.format`` templates: translate first, then format.
    """
    from childvault._i18n import gettext

    return gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural template for ``n`` in the environment's locale."""
    from childvault._i18n import ngettext as _ngettext

    return _ngettext(singular, plural, n)


# C0/C1 controls (newline and tab included: a value must not start a fake line),
# DEL, and the bidirectional overrides/isolates, which make shown text differ
# from stored text. Shown as escapes so a reason written to mislead cannot set
# the window title, clear the screen, overwrite or reorder what an officer reads.
_UNSAFE_CLASS = "[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]"


@functools.cache
def _unsafe() -> re.Pattern[str]:
    # Compiled on first use (a few ms at start-up otherwise): printable text,
    # nearly every line, never needs it (see :func:`safe`).
    return re.compile(_UNSAFE_CLASS)


def safe(value: object) -> str:
    """``value`` as text fit for a terminal: control characters as ``\\x1b`` escapes.

    Every string that came from data or another person (reasons, names, ids,
    field values) goes through this before it is printed for humans; ``--json``
    output is JSON-escaped already and is left alone.
    """
    text = "" if value is None else str(value)
    if text.isprintable():
        # Every character the pattern matches is non-printable (Cc or Cf), so
        # printable text has nothing to escape: most lines skip the pattern.
        return text

    def show(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"

    return _unsafe().sub(show, text)


def local_time(value: str | None) -> str:
    """A library time (RFC 3339, UTC) in Beijing time to the second, no microseconds.

    Officers work in China; the zone is named so nobody reads it as UTC. Text
    that is not a time is shown escaped, as it came.
    """
    from datetime import UTC, datetime, timedelta, timezone, tzinfo

    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return safe(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    zone: tzinfo
    try:
        from zoneinfo import ZoneInfo

        zone = ZoneInfo("Asia/Shanghai")
    except (ImportError, KeyError, OSError):
        # No tz database here (ZoneInfoNotFoundError is a KeyError): China has
        # kept UTC+8 without DST since 1991.
        zone = timezone(timedelta(hours=8), "CST")
    return moment.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S %z")


@dataclass
class Ctx:
    """Global options and helpers handed to every command."""

    home: Path | None
    user: str | None
    as_json: bool
    #: Vault AppRole login: role id (not secret) and the file holding the secret id.
    role_id: str | None = None
    secret_id_file: Path | None = None
    #: The vault once opened (once per command); tests may hand in an open one.
    _vault: Vault | None = None
    #: ``--server URL`` / CHILDVAULT_SERVER: talk to `childvault serve` (the home
    #: then holds only the person's identity file).
    server: str | None = None

    def require_home(self) -> Path:
        """The home directory from --home or CHILDVAULT_HOME."""
        if self.home is None:
            raise click.UsageError(_("no home directory: pass --home DIR or set CHILDVAULT_HOME"))
        return self.home

    def require_user(self) -> str:
        """The acting user from --as or CHILDVAULT_USER."""
        if not self.user:
            raise click.UsageError(_("no acting user: pass --as USER or set CHILDVAULT_USER"))
        return self.user

    def passphrase(self, user: str) -> str:
        """The acting user's passphrase: CHILDVAULT_PASSPHRASE, else a hidden prompt."""
        env = os.environ.get("CHILDVAULT_PASSPHRASE")
        if env is not None:
            return env
        if not sys.stdin.isatty():
            raise click.UsageError(
                _("no passphrase: set CHILDVAULT_PASSPHRASE or run in a terminal to be prompted")
            )
        return str(
            click.prompt(
                _("Passphrase for {user}").format(user=safe(user)), hide_input=True, err=True
            )
        )

    def open(self) -> Vault:
        """Open the vault as the acting user (once per command)."""
        if self._vault is None:
            from childvault.keys._agent import connect
            from childvault.vault import OpenBaoCredentials, Vault
            from childvault.vault._doctor import check_owner

            user = self.require_user()
            home = self.require_home()
            # Another system user (or root) would fail halfway or leave files the
            # owner cannot read: refused up front, naming the owner and the fix.
            check_owner(home)
            approle = self.approle()
            # An AppRole login replaces any VAULT_TOKEN in the environment.
            token = None if approle else os.environ.get("VAULT_TOKEN")
            creds = OpenBaoCredentials(token=token, approle=approle) if token or approle else None
            # A session (`childvault unlock`) for this user and home: no passphrase.
            held = connect(home, user)
            if self.server:
                self._vault = self._connect(held, home, user, creds)
            elif held is not None:
                self._vault = Vault.open(home, identity=held, credentials=creds)
            else:
                self._vault = Vault.open(home, user, self.passphrase(user), credentials=creds)
        return self._vault

    def _connect(self, held: Any, home: Path, user: str, creds: Any) -> Vault:
        """Server mode: the identity from the workstation's home, the rows from the server."""
        from childvault.keys import Identity, NotFound
        from childvault.vault._config import Home

        identity = held
        if identity is None:
            path = Home(home).identity(user)
            if not path.exists():
                raise NotFound(
                    _("no identity file of {user} in {home}").format(user=user, home=home)
                )
            identity = Identity.load(path, self.passphrase(user))
        return connect_server(str(self.server), identity, creds)

    def close(self) -> None:
        """Close the vault if a command opened it."""
        if self._vault is not None:
            self._vault.close()
            self._vault = None

    def emit(self, doc: Any, human: Callable[[], None] | str | None = None) -> None:
        """Print ``doc`` as the one JSON document (``--json``) or the human text."""
        if self.as_json:
            click.echo(json.dumps(doc, ensure_ascii=False, indent=2, default=str))
        elif callable(human):
            human()
        elif human is not None:
            click.echo(human)

    def approle(self) -> tuple[str, str] | None:
        """(role id, secret id) for a Vault AppRole login, if a role id was given.

        The secret id comes from ``--secret-id-file`` /
        ``CHILDVAULT_APPROLE_SECRET_ID_FILE`` or ``CHILDVAULT_APPROLE_SECRET_ID``,
        never from a command-line argument.
        """
        if not self.role_id:
            return None
        secret = os.environ.get("CHILDVAULT_APPROLE_SECRET_ID")
        if self.secret_id_file is not None:
            try:
                secret = self.secret_id_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise click.UsageError(
                    _("cannot read the secret-id file {path}: {why}").format(
                        path=safe(self.secret_id_file), why=exc.strerror
                    )
                ) from exc
        if not secret:
            raise click.UsageError(
                _(
                    "--role-id needs a secret id: --secret-id-file FILE (or "
                    "CHILDVAULT_APPROLE_SECRET_ID_FILE / CHILDVAULT_APPROLE_SECRET_ID)"
                )
            )
        return self.role_id, secret


def connect_server(server: str, identity: Any, credentials: Any = None) -> Vault:
    """Open the vault served at ``server`` (one URL, or replicas' URLs separated by
    commas) as ``identity``.

    The one place the CLI connects to `childvault serve`: every command in server
    mode and the console's pages go through it, so all trust the same
    certificates (``CHILDVAULT_SERVER_CA``, else the system's).
    """
    from childvault.vault import Vault

    ca = os.environ.get("CHILDVAULT_SERVER_CA")
    return Vault.connect(server, identity, credentials=credentials, verify=ca or True)


def new_passphrase(path: Path | None, who: str) -> str:
    """A new identity's passphrase: from ``--passphrase-file``, else prompted twice."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.UsageError(
                _("cannot read the passphrase file {path}: {why}").format(
                    path=safe(path), why=exc.strerror
                )
            ) from exc
        # Only the line ending is stripped: spaces inside a passphrase are significant.
        return text.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError(
            _("no passphrase for {who}: pass --passphrase-file FILE").format(who=safe(who))
        )
    return str(
        click.prompt(
            _("New passphrase for {who}").format(who=safe(who)),
            hide_input=True,
            confirmation_prompt=True,
            err=True,
        )
    )


@contextlib.contextmanager
def progress_bar(c: Ctx, label: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing a bar on a terminal (stderr).

    Silent when stderr is not a terminal or with ``--json``, so scripts and
    JSON output stay clean.
    """
    show = sys.stderr.isatty() and not c.as_json
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if not show:
            return
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        yield progress
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def pass_ctx(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator handing the :class:`Ctx` to a command."""
    return click.pass_obj(fn)


def init_vault(
    home: Path,
    *,
    institution: str,
    admin: str,
    passphrase: Callable[[], str],
    provider: str,
    schema: Path | None,
    witness: Path | None,
    vault_addr: str | None,
    transit_mount: str,
    kv_mount: str,
    key_name: str,
    store_dsn: str | None = None,
    store_dsn_file: Path | None = None,
) -> dict[str, str]:
    """Create a vault in ``home``; return its id, home and witness path.

    ``store_dsn`` / ``store_dsn_file``: a PostgreSQL store (see ``Vault.init``).

    ``passphrase`` is called after the provider options are checked, so a
    usage error is reported before anyone is prompted.
    """
    from childvault.vault import LocalKeys, OpenBaoKeys, Vault

    settings = None
    if provider == "vault":
        from childvault.keys import VaultSettings

        if not vault_addr:
            raise click.UsageError(_("--provider vault needs --vault-addr or VAULT_ADDR"))
        settings = json.loads(
            VaultSettings.from_env(
                addr=vault_addr, transit_mount=transit_mount, kv_mount=kv_mount, key_name=key_name
            ).to_json()
        )
    with Vault.init(
        home,
        institution=institution,
        admin=admin,
        admin_passphrase=passphrase(),
        keys=OpenBaoKeys.from_mapping(settings) if settings is not None else LocalKeys(),
        schema=schema,
        witness=witness,
        store_dsn=store_dsn,
        store_dsn_file=store_dsn_file,
    ) as v:
        return {"vault_id": v.vault_id, "home": str(v.home), "witness": str(v.witness_path)}


def setup_vault_server(
    home: Path,
    audit_file: str | None,
    *,
    allow_no_audit_device: bool = False,
    control_groups: bool = False,
) -> list[str]:
    """Prepare the Vault server of the vault in ``home`` with a root/bootstrap
    ``VAULT_TOKEN``; return the actions taken, one line each."""
    from childvault.keys import VaultSettings
    from childvault.keys import setup_vault as setup
    from childvault.vault._config import Config, Home

    config = Config.load(Home(home))
    if config.provider != "vault" or not config.vault_settings:
        raise click.UsageError(_("this vault uses the local key provider; nothing to set up"))
    token = os.environ.get("VAULT_TOKEN")
    if not token:
        raise click.UsageError(_("set VAULT_TOKEN to a root or bootstrap token for setup"))
    return setup(
        VaultSettings.from_json(config.vault_settings),
        token,
        audit_file=audit_file,
        allow_no_audit_device=allow_no_audit_device,
        control_groups=control_groups,
    )


def parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` options (``--field``) as a mapping; each name at most once."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                _("expected NAME=VALUE, got {given!r}").format(given=item.split("=")[0]),
                param_hint="--field",
            )
        if name in values:
            raise click.BadParameter(
                _("field {name!r} given twice").format(name=name), param_hint="--field"
            )
        values[name.strip()] = value
    return values


def read_grant_arg(value: str) -> str:
    """A token given as text, ``@FILE`` or ``@-`` (stdin).

    A file must be a regular file and is read only up to :data:`MAX_GRANT_FILE`
    (``@/dev/zero`` or a FIFO would otherwise never end or fill the memory).
    """
    if value == "@-":
        return _limited_text(sys.stdin.read(MAX_GRANT_FILE + 1), _("standard input"))
    if value.startswith("@"):
        path = value[1:]
        try:
            # O_NONBLOCK: opening a FIFO must not hang before it is refused.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise click.BadParameter(
                _("cannot read {path}: {why}").format(path=safe(path), why=exc.strerror),
                param_hint="--grant",
            ) from exc
        with os.fdopen(fd, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise click.BadParameter(
                    _("{path} is not a regular file").format(path=safe(path)),
                    param_hint="--grant",
                )
            data = fh.read(MAX_GRANT_FILE + 1)
        return _limited_text(data, safe(path))
    return value.strip()


def _limited_text(data: str | bytes, where: str) -> str:
    """``data`` (read with one byte/char past the limit) as stripped text, or a usage error."""
    if len(data) > MAX_GRANT_FILE:
        raise click.BadParameter(
            _("{where} holds more than {limit} bytes: not an approval token").format(
                where=where, limit=MAX_GRANT_FILE
            ),
            param_hint="--grant",
        )
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise click.BadParameter(
                _("{where} is not UTF-8 text: not an approval token").format(where=where),
                param_hint="--grant",
            ) from exc
    return data.strip()


def read_bounded(path: Path, what: str, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``path``: the caller refuses anything longer,
    and a huge or endless file is never read whole. An unreadable file is a
    usage error naming it."""
    try:
        with path.open("rb") as fh:
            return fh.read(limit + 1)
    except OSError as exc:
        raise click.BadParameter(
            _("cannot read {path}: {why}").format(path=safe(path), why=exc.strerror),
            param_hint=what,
        ) from exc


def require_regular_file(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is a regular file (not a device, FIFO or directory)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise click.BadParameter(
            _("cannot read {path}: {why}").format(path=safe(path), why=exc.strerror),
            param_hint=what,
        ) from exc
    if not stat.S_ISREG(mode):
        raise click.BadParameter(
            _("{path} is not a regular file").format(path=safe(path)), param_hint=what
        )


def field_names(v: Vault, names: Iterable[str], type_name: str | None = None) -> list[str]:
    """Field names given by name or by the schema's Chinese label (``姓名``), as names.

    Labels are the part of a field's description before `` / ``; a name that is
    neither is passed on unchanged for the library to refuse with its message.
    """
    from childvault.vault._importer import field_label

    types = (
        [v.schema.types[type_name]]
        if type_name is not None and type_name in v.schema.types
        else v.schema.types.values()
    )
    labels: dict[str, str] = {}
    for rtype in types:
        for name, spec in rtype.fields.items():
            label = field_label(spec.description)
            if label:
                labels.setdefault(label, name)
    return [labels.get(n, n) if n not in labels.values() else n for n in names]


def purpose_names(v: Vault, purposes: Iterable[str]) -> list[str]:
    """Purposes given by name or by Chinese label (``个案管理``), as names."""
    from childvault.vault._importer import purpose_names as names

    return names(purposes, v.schema.purposes)


def field_title(v: Vault, name: str) -> str:
    """A field as a Chinese reader sees it (``姓名 (name)``); the name in English."""
    from childvault._i18n import environment_locale
    from childvault.vault._importer import field_label

    if environment_locale() == "en":
        return name
    for rtype in v.schema.types.values():
        spec = rtype.fields.get(name)
        label = field_label(spec.description) if spec is not None else None
        if label:
            return f"{label} ({name})"
    return name


def purpose_title(name: str) -> str:
    """A purpose as a Chinese reader sees it (``个案管理 (case_management)``), else its name."""
    from childvault._i18n import environment_locale

    if environment_locale() == "en":
        return name
    from childvault.vault._importer import PURPOSE_LABELS

    label = next((zh for zh, code in PURPOSE_LABELS.items() if code == name), None)
    return f"{label} ({name})" if label else name


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a regular file, read in chunks (a scanned form may be large)."""
    import hashlib

    require_regular_file(path, "--consent-form")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def consent_from_options(
    v: Vault,
    *,
    purposes: list[str],
    retain_until: str,
    consent_by: str,
    consented_at: str | None,
    notice_version: str | None,
    guardian_informed: bool,
    guardian_also: bool,
    consent_party: str | None = None,
    consent_relation: str | None = None,
    consent_form: Path | None = None,
) -> Any:
    """A consent built from the consent options of ``record add`` and ``consent``,
    checked exactly as an import row's consent columns are. ``consent_form``
    is the signed consent form, of which only the SHA-256 is kept."""
    from childvault.vault._consent import parse_consent_columns
    from childvault.vault._time import today

    columns = {
        "consent_by": consent_by,
        "purposes": ";".join(purpose_names(v, purposes)),
        "retain_until": retain_until,
        "guardian_informed": "yes" if guardian_informed else "no",
        "guardian_also": "yes" if guardian_also else "no",
    }
    if consented_at:
        columns["consented_at"] = consented_at
    if notice_version:
        columns["notice_version"] = notice_version
    if consent_party:
        columns["consent_party"] = consent_party
    if consent_relation:
        columns["consent_relation"] = consent_relation
    if consent_form is not None:
        columns["consent_form_sha256"] = file_sha256(consent_form)
    return parse_consent_columns(
        columns, default_notice=v.setting("notice_version"), today=today(v.now())
    )
