"""Sessions: ``unlock`` and ``lock`` (one passphrase per sitting, like ssh-agent)."""

from __future__ import annotations

import click

from childvault.cli._context import Ctx, _, pass_ctx, safe


@click.command()
@click.option(
    "--for",
    "duration",
    default="15m",
    show_default=True,
    help="How long the session lasts, e.g. 30m or 2h (at most 8h).",
)
@pass_ctx
def unlock(c: Ctx, duration: str) -> None:
    """Unlock your identity once for a while: later commands ask no passphrase.

    A per-user agent process holds the unlocked keys in memory (never on disk)
    and signs and opens sealed keys for the commands you run as this user on
    this vault home. `childvault lock` or the end of the time ends it.
    """
    from childvault.keys import Identity
    from childvault.keys._agent import MAX_SECONDS, start
    from childvault.vault._config import Home
    from childvault.vault._time import parse_duration

    seconds = int(parse_duration(duration).total_seconds())
    if not 0 < seconds <= MAX_SECONDS:
        raise click.BadParameter(
            _("a session lasts at most {hours} hours").format(hours=MAX_SECONDS // 3600),
            param_hint="--for",
        )
    user = c.require_user()
    home = c.require_home()
    path = Home(home).identity(user)
    if not path.exists():
        raise click.UsageError(
            _("unknown user {user} in {home}: check --as / CHILDVAULT_USER").format(
                user=safe(user), home=safe(home)
            )
        )
    # Unlocking checks the passphrase (WrongPassphrase, exit 3) before any agent starts.
    identity = Identity.load(path, c.passphrase(user))
    c.close()
    socket = start(identity, home, seconds)
    del identity
    c.emit(
        {"ok": True, "user": user, "seconds": seconds, "socket": str(socket)},
        _("Unlocked {user} for {minutes} min. `childvault lock` ends the session.").format(
            user=safe(user), minutes=seconds // 60
        ),
    )


@click.command()
@pass_ctx
def lock(c: Ctx) -> None:
    """End the session of `unlock`: the agent drops the keys and exits."""
    from childvault.keys._agent import lock as stop

    user = c.require_user()
    stopped = stop(c.require_home(), user)
    c.emit(
        {"ok": True, "user": user, "locked": stopped},
        _("Locked; the next command asks for the passphrase.")
        if stopped
        else _("No session was open for {user}.").format(user=safe(user)),
    )
