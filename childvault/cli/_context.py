"""Shared CLI plumbing: the context handed to every command, passphrases,
output, argument parsers shared by several command modules, and the calls
that open or create a vault (DESIGN section 8).

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
import json
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from childvault.vault import Vault

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_DENIED, EXIT_INTEGRITY, EXIT_PROVIDER = range(6)


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

    def require_home(self) -> Path:
        """The home directory from --home or CHILDVAULT_HOME."""
        if self.home is None:
            raise click.UsageError("no home directory: pass --home DIR or set CHILDVAULT_HOME")
        return self.home

    def require_user(self) -> str:
        """The acting user from --as or CHILDVAULT_USER."""
        if not self.user:
            raise click.UsageError("no acting user: pass --as USER or set CHILDVAULT_USER")
        return self.user

    def passphrase(self, user: str) -> str:
        """The acting user's passphrase: CHILDVAULT_PASSPHRASE, else a hidden prompt."""
        env = os.environ.get("CHILDVAULT_PASSPHRASE")
        if env is not None:
            return env
        if not sys.stdin.isatty():
            raise click.UsageError(
                "no passphrase: set CHILDVAULT_PASSPHRASE or run in a terminal to be prompted"
            )
        return str(click.prompt(f"Passphrase for {user}", hide_input=True, err=True))

    def open(self) -> Vault:
        """Open the vault as the acting user (once per command)."""
        if self._vault is None:
            from childvault.vault import Vault

            user = self.require_user()
            approle = self.approle()
            self._vault = Vault.open(
                self.require_home(),
                user,
                self.passphrase(user),
                # An AppRole login replaces any VAULT_TOKEN in the environment.
                vault_token=None if approle else os.environ.get("VAULT_TOKEN"),
                approle=approle,
            )
        return self._vault

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
                    f"cannot read the secret-id file {self.secret_id_file}: {exc.strerror}"
                ) from exc
        if not secret:
            raise click.UsageError(
                "--role-id needs a secret id: --secret-id-file FILE (or "
                "CHILDVAULT_APPROLE_SECRET_ID_FILE / CHILDVAULT_APPROLE_SECRET_ID)"
            )
        return self.role_id, secret


def new_passphrase(path: Path | None, who: str) -> str:
    """A new identity's passphrase: from ``--passphrase-file``, else prompted twice."""
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.UsageError(
                f"cannot read the passphrase file {path}: {exc.strerror}"
            ) from exc
        # Only the line ending is stripped: spaces inside a passphrase are significant.
        return text.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise click.UsageError(f"no passphrase for {who}: pass --passphrase-file FILE")
    return str(
        click.prompt(
            f"New passphrase for {who}", hide_input=True, confirmation_prompt=True, err=True
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
    from childvault.vault import Vault

    settings = None
    if provider == "vault":
        from childvault.keys import VaultSettings

        if not vault_addr:
            raise click.UsageError("--provider vault needs --vault-addr or VAULT_ADDR")
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
        provider=provider,
        schema=schema,
        witness=witness,
        vault_settings=settings,
        store_dsn=store_dsn,
        store_dsn_file=store_dsn_file,
    ) as v:
        return {"vault_id": v.vault_id, "home": str(v.home), "witness": str(v.witness_path)}


def setup_vault_server(home: Path, audit_file: str | None) -> list[str]:
    """Prepare the Vault server of the vault in ``home`` with a root/bootstrap
    ``VAULT_TOKEN``; return the actions taken, one line each."""
    from childvault.keys import VaultSettings
    from childvault.keys import setup_vault as setup
    from childvault.vault._config import Config, Home

    config = Config.load(Home(home))
    if config.provider != "vault" or not config.vault_settings:
        raise click.UsageError("this vault uses the local key provider; nothing to set up")
    token = os.environ.get("VAULT_TOKEN")
    if not token:
        raise click.UsageError("set VAULT_TOKEN to a root or bootstrap token for setup")
    return setup(VaultSettings.from_json(config.vault_settings), token, audit_file=audit_file)


def parse_assignments(items: tuple[str, ...]) -> dict[str, str]:
    """``NAME=VALUE`` options (``--field``) as a mapping; each name at most once."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise click.BadParameter(
                f"expected NAME=VALUE, got {item.split('=')[0]!r}", param_hint="--field"
            )
        if name in values:
            raise click.BadParameter(f"field {name!r} given twice", param_hint="--field")
        values[name.strip()] = value
    return values


def read_grant_arg(value: str) -> str:
    """A token given as text, ``@FILE`` or ``@-`` (stdin)."""
    if value == "@-":
        return sys.stdin.read().strip()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {value[1:]}: {exc.strerror}", param_hint="--grant"
            ) from exc
    return value.strip()


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
) -> Any:
    """A consent built from the consent options of ``record add`` and ``consent``,
    checked exactly as an import row's consent columns are."""
    from childvault.vault._consent import parse_consent_columns
    from childvault.vault._time import today

    columns = {
        "consent_by": consent_by,
        "purposes": ";".join(purposes),
        "retain_until": retain_until,
        "guardian_informed": "yes" if guardian_informed else "no",
        "guardian_also": "yes" if guardian_also else "no",
    }
    if consented_at:
        columns["consented_at"] = consented_at
    if notice_version:
        columns["notice_version"] = notice_version
    return parse_consent_columns(
        columns, default_notice=v.setting("notice_version"), today=today(v.now())
    )
