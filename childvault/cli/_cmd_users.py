"""``childvault user``: invite, enrol, add, disable and list users."""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import click

from childvault.cli._context import (
    Ctx,
    _,
    new_passphrase,
    pass_ctx,
    read_bounded,
    require_regular_file,
    safe,
)

#: Largest invite or enrolment request file read (either is about 2 KiB).
MAX_ENROLMENT_FILE = 64 * 1024


def _read_small(path: Path, what: str) -> bytes:
    """A regular file of at most :data:`MAX_ENROLMENT_FILE` bytes, read with that bound."""
    require_regular_file(path, what)
    data = read_bounded(path, what, MAX_ENROLMENT_FILE)
    if len(data) > MAX_ENROLMENT_FILE:
        raise click.BadParameter(
            _("{path} is too large for an invite or enrolment request").format(path=safe(path)),
            param_hint=what,
        )
    return data


def _write_new(path: Path, data: bytes, what: str) -> None:
    """Write ``data`` to a new file (mode 0600); an existing file is never replaced."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError as exc:
        raise click.BadParameter(
            _("{path} exists already: it is not replaced").format(path=safe(path)),
            param_hint=what,
        ) from exc
    except OSError as exc:
        raise click.BadParameter(
            _("cannot write {path}: {why}").format(path=safe(path), why=exc.strerror),
            param_hint=what,
        ) from exc
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


@click.group()
def user() -> None:
    """Manage users (admin)."""


@user.command("add")
@click.argument("name", required=False)
@click.option(
    "--role",
    "roles",
    multiple=True,
    type=click.Choice(["staff", "officer", "admin"]),
    help="Role (repeatable).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the new user's passphrase (written by the new user).",
)
@click.option(
    "--request",
    "request_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Enrolment request written by `user enroll` (no NAME, --role or passphrase then).",
)
@click.option(
    "--organisation",
    help="Entrusted organisation (受委托方) the account belongs to (staff only; with "
    "--agreement and --expires).",
)
@click.option("--agreement", help="Reference of the entrustment agreement.")
@click.option("--expires", help="Last day of the agreement (YYYY-MM-DD); refused after it.")
@pass_ctx
def user_add(
    c: Ctx,
    name: str | None,
    roles: tuple[str, ...],
    passphrase_file: Path | None,
    request_file: Path | None,
    organisation: str | None,
    agreement: str | None,
    expires: str | None,
) -> None:
    """Enrol user NAME with one or more roles, or register an enrolment --request.

    Without --request, this is the one-terminal path for a person enrolling at
    the admin's desk: the PERSON types their own new passphrase at the prompt;
    the admin must not type it, nor know it. Otherwise use `user invite`, then
    `user enroll` (the person, in their own session), then `user add --request`.
    """
    terms = _entrusted_terms(organisation, agreement, expires, roles)
    if request_file is not None:
        if terms is not None:
            raise click.UsageError(
                _("--request takes no --organisation: the invite carries the agreement")
            )
        if name is not None or roles or passphrase_file is not None:
            raise click.UsageError(
                _("--request takes no NAME, --role or --passphrase-file: the request names them")
            )
        data = _read_small(request_file, "--request")
        info = c.open().add_user_from_request(data)
        name = info.name
    else:
        if name is None or not roles:
            raise click.UsageError(_("give NAME and --role, or --request FILE"))
        v = c.open()
        if terms is None:
            info = v.add_user(name, roles, new_passphrase(passphrase_file, name))
        else:
            info = v.add_entrusted_user(
                name,
                new_passphrase(passphrase_file, name),
                organisation=terms[0],
                agreement=terms[1],
                expires=terms[2],
            )
    doc = {"ok": True, "user": info.to_json()}
    text = _("Added {name} ({roles}).").format(name=safe(name), roles=_(", ").join(info.roles))
    if "officer" in info.roles and not info.can_approve:
        text += "\n" + _(
            "{name} cannot approve yet: an existing officer must run "
            "`childvault --as OFFICER keys share {name}`."
        ).format(name=safe(name))
    if c.open().provider_kind == "vault":
        # Vault mode: the person also needs their own Vault identity, so that
        # Vault's audit log names them (issue 14); it takes a root or bootstrap
        # token, which this command does not hold: say what the operator runs.
        role = info.roles[0] if len(info.roles) == 1 else "ROLE"
        command = f"childvault vault identity add {name} --role {role}"
        doc["vault_identity_command"] = command
        text += "\n" + _(
            "Vault mode: give {name} their own Vault identity with a root or bootstrap "
            "VAULT_TOKEN: {command}"
        ).format(name=safe(name), command=safe(command))
    c.emit(doc, text)


def _entrusted_terms(
    organisation: str | None, agreement: str | None, expires: str | None, roles: tuple[str, ...]
) -> tuple[str, str, date] | None:
    """The three entrusted options, all given or none; staff role only."""
    given = [v is not None for v in (organisation, agreement, expires)]
    if not any(given):
        return None
    if not all(given):
        raise click.UsageError(
            _("an entrusted account needs --organisation, --agreement and --expires")
        )
    if set(roles) != {"staff"}:
        raise click.UsageError(
            _("an entrusted organisation's account can only have the staff role")
        )
    try:
        day = date.fromisoformat(str(expires))
    except ValueError as exc:
        raise click.BadParameter(
            _("{value} is not a date (YYYY-MM-DD)").format(value=safe(str(expires))),
            param_hint="--expires",
        ) from exc
    return str(organisation), str(agreement), day


@user.command("list")
@pass_ctx
def user_list(c: Ctx) -> None:
    """List users, roles and checkpoint verifier keys."""
    from childvault.vault._time import iso

    users = c.open().users()

    def human() -> None:
        for u in users:
            extra = _(" (can approve)") if u.can_approve else ""
            click.echo(f"{safe(u.name):20} {','.join(u.roles):22} {iso(u.created_at)}{extra}")
            if u.entrusted is not None:
                line = _("  entrusted: {organisation}, agreement {agreement}, until {expires}")
                click.echo(
                    line.format(
                        organisation=safe(u.entrusted["organisation"]),
                        agreement=safe(u.entrusted["agreement"]),
                        expires=safe(u.entrusted["expires"]),
                    )
                    + (_(" (expired: refused)") if u.expired else "")
                )
            if u.vkey:
                click.echo(f"  vkey {u.vkey}")

    c.emit({"ok": True, "users": [u.to_json() for u in users]}, human)


@user.command("disable")
@click.argument("name")
@click.option("--reason", required=True, help="Why the user is disabled (kept in the log).")
@pass_ctx
def user_disable(c: Ctx, name: str, reason: str) -> None:
    """Disable user NAME (admin): signed, revokes their grants, removes their key slot."""
    done = c.open().disable_user(name, reason=reason)
    text = _("Disabled {name}; revoked {count} grant(s).").format(
        name=safe(name), count=len(done.revoked_grants)
    )
    if done.rotation_required:
        text += "\n" + _(
            "{name} held the custodian key: an officer must run `childvault keys rotate` "
            "before new records can be written."
        ).format(name=safe(name))
    c.emit(done.to_json(), text)


@user.command("invite")
@click.argument("name")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["staff", "officer", "admin"]),
    help="Role (repeatable).",
)
@click.option("--valid-for", default="7d", show_default=True, help="How long the invite is valid.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the invite (default NAME.invite.json).",
)
@click.option(
    "--organisation",
    help="Entrusted organisation (受委托方) the account belongs to (staff only; with "
    "--agreement and --expires).",
)
@click.option("--agreement", help="Reference of the entrustment agreement.")
@click.option("--expires", help="Last day of the agreement (YYYY-MM-DD); refused after it.")
@pass_ctx
def user_invite(
    c: Ctx,
    name: str,
    roles: tuple[str, ...],
    valid_for: str,
    out: Path | None,
    organisation: str | None,
    agreement: str | None,
    expires: str | None,
) -> None:
    """Write a one-time invite for NAME (admin), to hand to the person.

    The person runs `childvault user enroll --invite FILE` in their own
    session; tell them the anchor fingerprint shown here in person or by phone.
    """
    from childvault.vault._time import parse_duration

    duration = parse_duration(valid_for)
    terms = _entrusted_terms(organisation, agreement, expires, roles)
    target = out or Path(f"{name}.invite.json")
    if terms is None:
        done = c.open().invite_user(name, roles, valid_for=duration)
    else:
        done = c.open().invite_entrusted_user(
            name,
            organisation=terms[0],
            agreement=terms[1],
            expires=terms[2],
            valid_for=duration,
        )
    _write_new(target, done.invite, "--out")
    doc = done.to_json(target)
    text = "\n".join(
        [
            _("Invite for {name} written to {path} (valid until {expires}).").format(
                name=safe(name), path=safe(target), expires=safe(doc["expires"])
            ),
            _("Vault fingerprint: {fingerprint}").format(fingerprint=done.fingerprint),
            _(
                "Give the file to {name} and tell them the fingerprint in person or by "
                "phone; they run `childvault user enroll --invite FILE`."
            ).format(name=safe(name)),
        ]
    )
    c.emit(doc, text)


@user.command("enroll")
@click.option(
    "--invite",
    "invite_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The invite file from the admin.",
)
@click.option(
    "--fingerprint",
    help="The vault fingerprint the admin told you (else you are asked to confirm it).",
)
@click.option(
    "--passphrase-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding your new passphrase (else you type it twice).",
)
@click.option(
    "--identity",
    "identity_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write your identity file (default: HOME/identities/NAME.id).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the enrolment request (default NAME.request.json).",
)
@pass_ctx
def user_enroll(
    c: Ctx,
    invite_file: Path,
    fingerprint: str | None,
    passphrase_file: Path | None,
    identity_file: Path | None,
    out: Path | None,
) -> None:
    """Enrol yourself with an invite: new keys and your own passphrase.

    Run by the new person, never by the admin. Shows the vault fingerprint to
    confirm with the admin, generates your keys, takes your passphrase, writes
    your identity file and a signed request the admin registers with
    `childvault user add --request FILE`.
    """
    from childvault.keys import IntegrityError
    from childvault.vault import Vault

    data = _read_small(invite_file, "--invite")
    summary = Vault.read_invite(data)
    name = summary.user
    shown = summary.fingerprint
    if fingerprint is not None:
        if " ".join(fingerprint.lower().split()) != shown:
            raise IntegrityError(
                _(
                    "the invite's vault fingerprint is {shown}, not the one you were told: "
                    "do not enrol; tell the admin"
                ).format(shown=shown)
            )
    else:
        if not sys.stdin.isatty():
            raise click.UsageError(_("pass --fingerprint with the fingerprint the admin told you"))
        click.echo(_("Vault fingerprint: {fingerprint}").format(fingerprint=shown), err=True)
        if not click.confirm(
            _("Is this the fingerprint the admin told you?"), default=False, err=True
        ):
            raise click.UsageError(_("not confirmed: nothing was written"))
    if identity_file is None:
        if c.home is None:
            raise click.UsageError(
                _("give --identity FILE, or --home DIR to write HOME/identities/NAME.id")
            )
        if not c.home.is_dir():
            raise click.BadParameter(
                _("{path} is not a directory").format(path=safe(c.home)), param_hint="--home"
            )
        # A workstation's home may hold nothing yet: make the identities folder
        # (owner only), as `init` does on the server.
        (c.home / "identities").mkdir(mode=0o700, exist_ok=True)
        identity_file = c.home / "identities" / f"{name}.id"
    elif not identity_file.parent.is_dir():
        raise click.BadParameter(
            _("the folder {path} does not exist: create it first").format(
                path=safe(identity_file.parent)
            ),
            param_hint="--identity",
        )
    target = out or Path(f"{name}.request.json")
    if target.exists():
        raise click.BadParameter(
            _("{path} exists already: it is not replaced").format(path=safe(target)),
            param_hint="--out",
        )
    request = Vault.enroll(data, new_passphrase(passphrase_file, name), identity_file)
    _write_new(target, request, "--out")
    doc = {
        "ok": True,
        "user": name,
        "roles": list(summary.roles),
        "vault_id": summary.vault_id,
        "fingerprint": shown,
        "identity": str(identity_file),
        "request": str(target),
    }
    text = _(
        "Your identity is in {identity}. Give {request} to the admin, who runs "
        "`childvault user add --request {request}`."
    ).format(identity=safe(identity_file), request=safe(target))
    c.emit(doc, text)
