"""``childvault console``: the officers' web console on 127.0.0.1.

Registered on the root group with ``cli.add_command(console)``. Library errors
(a wrong passphrase, an unknown user) propagate to the root group, which maps
them to messages and exit codes like every other command.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from pathlib import Path

import click

from childvault.cli._context import _, safe


def _context_default(ctx: click.Context, name: str) -> object:
    # The root group's --home / --as (a Ctx object) apply when given there.
    return getattr(ctx.find_root().obj, name, None)


def _passphrase(user: str) -> str:
    """The officer's passphrase: CHILDVAULT_PASSPHRASE, else a hidden prompt (as the CLI)."""
    env = os.environ.get("CHILDVAULT_PASSPHRASE")
    if env is not None:
        return env
    if not sys.stdin.isatty():
        raise click.UsageError(
            _("no passphrase: set CHILDVAULT_PASSPHRASE or run in a terminal to be prompted")
        )
    return str(
        click.prompt(_("Passphrase for {user}").format(user=safe(user)), hide_input=True, err=True)
    )


@click.command("console")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    help=(
        "Vault home directory; with --server, the directory holding your identity "
        "file (or CHILDVAULT_HOME, or the global --home)."
    ),
)
@click.option("--as", "user", help="The officer (or CHILDVAULT_USER, or the global --as).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--lang",
    type=click.Choice(["zh_CN", "en"]),
    default="zh_CN",
    show_default=True,
    help="Language the pages start in (switchable on the page).",
)
@click.pass_context
def console(ctx: click.Context, home: Path | None, user: str | None, port: int, lang: str) -> None:
    """Officers' web console: approve, deny and revoke in the browser.

    Unlocks your identity once, serves the console on 127.0.0.1 only and prints
    a one-time login URL (valid once, for five minutes). Open it in a browser on
    this machine. Stop with Ctrl+C: your unlocked key leaves memory with the
    process. With the global --server URL (or CHILDVAULT_SERVER) the pages work
    through `childvault serve`, and --home holds only your identity file.
    """
    from childvault._i18n import _t
    from childvault.console import Console, serve
    from childvault.keys import Identity, NotFound, check_user_name

    home = (
        home
        or _as_path(_context_default(ctx, "home"))
        or _as_path(os.environ.get("CHILDVAULT_HOME"))
    )
    user = user or _as_str(_context_default(ctx, "user")) or os.environ.get("CHILDVAULT_USER")
    if home is None:
        raise click.UsageError(_("no home directory: pass --home DIR or set CHILDVAULT_HOME"))
    if not user:
        raise click.UsageError(_("no acting user: pass --as USER or set CHILDVAULT_USER"))
    check_user_name(user)
    # docs/operators.md: each user's identity is home/identities/<user>.id.
    path = home / "identities" / f"{user}.id"
    if not path.exists():
        raise NotFound(
            _t(
                "unknown user {user!r} in {home}: check --as / CHILDVAULT_USER, "
                "or ask an admin to run `childvault user add`",
                user=user,
                home=home,
            )
        )
    identity = Identity.load(path, _passphrase(user))
    token = os.environ.get("VAULT_TOKEN")
    connect = None
    server = _as_str(_context_default(ctx, "server"))
    if server:
        # `childvault --server URL console` (or CHILDVAULT_SERVER): the home is the
        # workstation's, holding only the identity; the pages go through the
        # server exactly as every other command does in server mode.
        from childvault.cli._context import connect_server
        from childvault.vault import OpenBaoCredentials

        creds = OpenBaoCredentials(token=token) if token else None
        connect = functools.partial(connect_server, server, identity, creds)
    app = Console(home, identity, vault_token=token, lang=lang, connect=connect)
    # Open once before serving: a wrong home or a non-officer fails here, on the terminal.
    with app.open_vault() as vault:
        if "officer" not in vault.roles:
            raise click.UsageError(
                _("{user} is not an officer: the console is for officers").format(user=safe(user))
            )

    def announce(url: str) -> None:
        click.echo(
            _(
                "childvault console for {user}: open this one-time link in a browser on this "
                "machine (it works once, for five minutes). Ctrl+C stops the console."
            ).format(user=safe(user)),
            err=True,
        )
        # The URL alone on stdout, so a script (or a test) can read it.
        click.echo(url)
        sys.stdout.flush()

    # Ctrl+C (or SIGINT from a supervisor) is how the console is meant to stop.
    with contextlib.suppress(KeyboardInterrupt):
        serve(app, port, announce)
    click.echo(_("childvault console stopped; the unlocked key is gone with it."), err=True)


def _as_path(value: object) -> Path | None:
    if isinstance(value, Path):
        return value
    return Path(value) if isinstance(value, str) and value else None


def _as_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


if __name__ == "__main__":  # pragma: no cover - `python -m childvault.cli._cmd_console`
    console(prog_name="childvault console")
