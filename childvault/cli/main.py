"""The ``childvault`` command line: the root group.

This module holds the global options, the one place where library errors
become messages and exit codes (:class:`_Group`), and the registration of the
commands, which live in modules by area (``_cmd_*.py``). Those modules import
only :mod:`childvault.cli._context`, never this module, and register nothing
themselves: every command is added here, explicitly. A command's module is
imported when the command is first looked up (:class:`_LazyCommands`): a
command on a session pays for its own module only (issues 16, 18).

Commands parse, prompt, call the library and print; they hold no logic.
"""

from __future__ import annotations

import errno
import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, cast

import click
import click.core
import click.decorators
import click.exceptions
import click.formatting
import click.parser
import click.termui
import click.types
import click.utils

from childvault._i18n import environment_locale
from childvault.cli._context import EXIT_ERROR, Ctx, _, ngettext, safe

#: Exit status after the reader of stdout went away (``| head``): 128 + SIGPIPE,
#: what a shell shows for a tool killed by the signal, without any message.
EXIT_BROKEN_PIPE = 141


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        # stdout has no file descriptor (a test runner): nothing will flush to a pipe.
        pass


def _permission_message(exc: OSError) -> str:
    """A refused file access, naming the file and what to do about it."""
    name = exc.filename if exc.filename is not None else _("a file of the vault home")
    return _(
        "permission denied on {file}: run childvault as the user who owns the vault home "
        "(or ask the operator to fix its owner and mode; `childvault doctor` checks them)"
    ).format(file=safe(name))


# Help texts stay plain English in the command modules (docstrings, help=): they are
# translated when shown, by walking the command tree before each run. The English
# source of each is kept on the object so a later run in another locale starts over.
_HELP_SOURCE = "_childvault_help_en"
_SHORT_SOURCE = "_childvault_short_help_en"


def _walk(command: click.Command, *, loaded_only: bool = False) -> Iterator[click.Command]:
    """``command`` and every command under it (``loaded_only``: none not yet imported)."""
    yield command
    if isinstance(command, click.Group):
        commands = command.commands
        subs = (
            commands.loaded()
            if loaded_only and isinstance(commands, _LazyCommands)
            else commands.values()
        )
        for sub in subs:
            yield from _walk(sub, loaded_only=loaded_only)


def help_messages(root: click.Command | None = None) -> list[str]:
    """Every command and option help text of the CLI (msgids of the catalog)."""
    texts: list[str] = []
    for command in _walk(cli if root is None else root):
        for obj in (command, *command.params):
            source = getattr(obj, _HELP_SOURCE, None) or getattr(obj, "help", None)
            if source and inspect.cleandoc(source) not in texts:
                texts.append(inspect.cleandoc(source))
            short = (
                getattr(obj, _SHORT_SOURCE)
                if hasattr(obj, _SHORT_SOURCE)
                else getattr(obj, "short_help", None)
            )
            if isinstance(obj, click.Command) and short and short not in texts:
                texts.append(short)
    return texts


def _short_help(text: str) -> str:
    """A translated help's first sentence, for the command list of a group."""
    first = text.split("\n\n", 1)[0].replace("\n", "")
    end = first.find("。")
    return first[: end + 1] if end >= 0 else first


def _helped(command: click.Command) -> list[Any]:
    """The command and its options, after dropping the --help option click keeps.

    click creates a command's --help option once, with its help text in the
    language of that moment; dropped here, it is made again in this run's.
    """
    if getattr(command, "_help_option", None) is not None:
        command._help_option = None
    return [command, *command.params]


def _localise_help(
    root: click.Command, top: click.Command | None = None, *, loaded_only: bool = False
) -> None:
    """Translate the help of every command and option under ``root`` into the
    environment's locale (``top``: the root group, whose short help is not shown;
    ``loaded_only``: skip commands whose module is not imported yet, they are
    translated when they are)."""
    english = environment_locale() == "en"
    top = root if top is None else top
    for command in _walk(root, loaded_only=loaded_only):
        for obj in _helped(command):
            if not hasattr(obj, _HELP_SOURCE):
                setattr(obj, _HELP_SOURCE, getattr(obj, "help", None))
            source = getattr(obj, _HELP_SOURCE)
            if not source:
                continue
            # The msgid is the help without the docstring's indentation.
            text = source if english else _(inspect.cleandoc(source))
            if text == inspect.cleandoc(source):
                text = source
            setattr(obj, "help", text)  # noqa: B010 - commands and options both have it
            if isinstance(obj, click.Command) and obj is not top:
                if not hasattr(obj, _SHORT_SOURCE):
                    setattr(obj, _SHORT_SOURCE, obj.short_help)
                own = getattr(obj, _SHORT_SOURCE)
                if english or text == source:
                    obj.short_help = own
                elif own:
                    obj.short_help = _(own)
                else:
                    # click shortens an English help at the first ". "; Chinese has none.
                    obj.short_help = _short_help(text)


def _click_gettext(message: str) -> str:
    return _(message)


def _click_ngettext(singular: str, plural: str, n: int) -> str:
    return ngettext(singular, plural, n)


# click marks its own messages ("Usage:", "Missing option", "Show this message and
# exit.") with the stdlib gettext bound at import in each of its modules: route
# them through the childvault catalog (childvault/cli/_click_messages.py lists them).
for _module in (
    click.core,
    click.decorators,
    click.exceptions,
    click.formatting,
    click.parser,
    click.termui,
    click.types,
    click.utils,
):
    if hasattr(_module, "_"):
        _module._ = _click_gettext  # type: ignore[attr-defined]
    if hasattr(_module, "ngettext"):
        _module.ngettext = _click_ngettext  # type: ignore[attr-defined]


class _TranslatedWhenShown(str):
    """An English ``%``-template that is translated when it is filled in (shown).

    For texts click takes once, when the CLI module is imported, and formats with
    ``%`` later: the reader's language is that of the run, not of the import.
    """

    __slots__ = ()

    def __mod__(self, values: Any) -> str:
        return str(_(str(self)) % values)


class _Group(click.Group):
    """Root group: maps every library error to its message and exit code."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the CLI with its help in the environment's locale."""
        # Commands imported later in this run are translated as they load.
        _localise_help(self, loaded_only=True)
        return super().main(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            # `childvault list | head -1`: the reader has what it wanted. Not an error
            # to report, and nothing can be printed on stdout any more.
            _silence_stdout()
            ctx.exit(EXIT_BROKEN_PIPE)
        except Exception as exc:
            from childvault.keys._errors import ChildVaultError

            obj = ctx.obj if isinstance(ctx.obj, Ctx) else None
            as_json = bool(obj and obj.as_json)
            if isinstance(exc, ChildVaultError):
                code, kind, message = exc.exit_code, type(exc).__name__, str(exc)
                if not as_json:
                    # JSON stays English and stable; a person reads their language.
                    message = exc.localized()
            elif isinstance(exc, PermissionError) or (
                isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM)
            ):
                code, kind, message = EXIT_ERROR, "PermissionError", _permission_message(exc)
            else:
                # A bug: never print the exception text, it may quote a value.
                code, kind = EXIT_ERROR, "InternalError"
                message = _("internal error ({kind}); please report it").format(
                    kind=type(exc).__name__
                )
                if os.environ.get("CHILDVAULT_DEBUG"):
                    raise
            try:
                if as_json:
                    doc = {
                        "ok": False,
                        "error": {"type": kind, "message": message, "exit_code": code},
                    }
                    click.echo(json.dumps(doc, ensure_ascii=False, indent=2))
                else:
                    # A library message may quote a name or reason someone typed.
                    click.echo(_("error: {message}").format(message=safe(message)), err=True)
            except BrokenPipeError:
                _silence_stdout()
            ctx.exit(code)
        finally:
            if isinstance(ctx.obj, Ctx):
                ctx.obj.close()


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CHILDVAULT_HOME",
    help="Vault home directory (or CHILDVAULT_HOME).",
)
@click.option("--as", "user", envvar="CHILDVAULT_USER", help="Acting user (or CHILDVAULT_USER).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option(
    "--role-id",
    envvar="CHILDVAULT_APPROLE_ROLE_ID",
    help="Vault provider: log in with AppRole (or CHILDVAULT_APPROLE_ROLE_ID).",
)
@click.option(
    "--secret-id-file",
    envvar="CHILDVAULT_APPROLE_SECRET_ID_FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File holding the AppRole secret id (or CHILDVAULT_APPROLE_SECRET_ID).",
)
@click.option(
    "--server",
    envvar="CHILDVAULT_SERVER",
    help=(
        "URL of a `childvault serve` to work with, or several replicas' URLs separated by "
        "commas (or CHILDVAULT_SERVER)."
    ),
)
# The help and the message are given in English: click would otherwise translate
# its own at import, in the locale of that moment, and keep that for the process.
@click.version_option(
    package_name="childvault",
    help="Show the version and exit.",
    message=_TranslatedWhenShown("%(prog)s, version %(version)s"),
)
@click.pass_context
def cli(
    ctx: click.Context,
    home: Path | None,
    user: str | None,
    as_json: bool,
    role_id: str | None,
    secret_id_file: Path | None,
    server: str | None,
) -> None:
    """childvault: encrypted records of children in welfare care.

    Staff write records; reading needs an officer's approval token; every
    access is logged in a tamper-evident audit log. Passphrases come from
    CHILDVAULT_PASSPHRASE or a hidden prompt, never from arguments.

    Exit codes: 0 ok, 1 error, 2 usage, 3 access denied or approval invalid,
    4 integrity failure, 5 key provider unavailable.
    """
    if isinstance(ctx.obj, Ctx):
        # Handed in by a test (with an open vault): keep it, take the options.
        ctx.obj.home, ctx.obj.user, ctx.obj.as_json = home, user, as_json
    else:
        ctx.obj = Ctx(home=home, user=user, as_json=as_json)
    ctx.obj.role_id, ctx.obj.secret_id_file = role_id, secret_id_file
    ctx.obj.server = server


class _LazyCommands(MutableMapping[str, click.Command]):
    """The root group's commands: names in registration order, each command
    imported from its module when first looked up (click asks for one command
    to run it, and for all of them only to list them in ``--help``).

    A command is prepared once, when loaded: the commands its module's group
    takes from other modules are added, then the late global options, then
    its help is translated into this run's language (:meth:`_Group.main`
    translates the loaded ones again in each later run).
    """

    def __init__(self, specs: tuple[tuple[str, str, str], ...]) -> None:
        """``specs``: (command name, module under ``childvault.cli``, attribute)."""
        self._specs = {name: (module, attr) for name, module, attr in specs}
        self._order = [name for name, _, _ in specs]
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        command = self._loaded.get(name)
        if command is None:
            module, attr = self._specs[name]  # KeyError: no such command
            command = getattr(importlib.import_module(f"childvault.cli.{module}"), attr)
            for attach in _ATTACH.get(name, ()):
                attach(command)
            _add_late_options(command)
            self._loaded[name] = command
            _localise_help(command, cli)
        return command

    def __setitem__(self, name: str, command: click.Command) -> None:
        # cli.add_command: a command already imported, taken as it is.
        if name not in self._order:
            self._order.append(name)
        self._specs.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._order.remove(name)
        self._specs.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._loaded

    def loaded(self) -> list[click.Command]:
        """The commands imported so far, in registration order."""
        return [self._loaded[name] for name in self._order if name in self._loaded]


def _attach(module: str, *attrs: str) -> Callable[[click.Command], None]:
    """A hook adding commands of another module to a group when the group loads."""

    def attach(group: click.Command) -> None:
        source = importlib.import_module(f"childvault.cli.{module}")
        for attr in attrs:
            cast(click.Group, group).add_command(getattr(source, attr))

    return attach


#: Subcommands that live in another module than their group.
_ATTACH: dict[str, tuple[Callable[[click.Command], None], ...]] = {
    # `audit prove` lives with the report and proof files it reads and writes.
    "audit": (_attach("_cmd_reports", "audit_prove"),),
    # `vault gc` and `vault identity` live in their own module.
    "vault": (_attach("_cmd_vault_admin", "vault_gc", "vault_identity"),),
    # `keys renew` lives in its own module (issue 12).
    "keys": (_attach("_cmd_renew", "renew"),),
}

# The commands: (name, module, attribute). Help lists them alphabetically; this
# order is the order in which they were defined before the split, kept because
# `cli.commands` keeps it and tests that draw commands from it with a fixed seed
# (tests/reliability/test_hostile_input.py) would otherwise try other cases.
cli.commands = cast(
    dict[str, click.Command],
    _LazyCommands(
        (
            ("init", "_cmd_init", "init"),
            ("user", "_cmd_users", "user"),
            ("keys", "_cmd_keys", "keys"),
            ("record", "_cmd_records", "record"),
            ("import", "_cmd_records", "import_"),
            ("list", "_cmd_records", "list_"),
            ("request", "_cmd_access", "request"),
            ("requests", "_cmd_access", "requests"),
            ("approve", "_cmd_access", "approve"),
            ("deny", "_cmd_access", "deny"),
            ("revoke", "_cmd_access", "revoke"),
            ("read", "_cmd_access", "read"),
            ("find", "_cmd_records", "find"),
            ("correct", "_cmd_lifecycle", "correct"),
            ("delete", "_cmd_lifecycle", "delete"),
            ("consent", "_cmd_lifecycle", "consent"),
            ("notice", "_cmd_lifecycle", "notice"),
            ("retention", "_cmd_lifecycle", "retention"),
            ("decommission", "_cmd_lifecycle", "decommission"),
            ("vault", "_cmd_keys", "vault_group"),
            ("audit", "_cmd_audit", "audit"),
            ("doctor", "_cmd_doctor", "doctor"),
            ("demo", "_cmd_demo", "demo"),
            ("report", "_cmd_reports", "report"),
            ("export", "_cmd_reports", "export"),
            ("console", "_cmd_console", "console"),
            ("unlock", "_cmd_session", "unlock"),
            ("lock", "_cmd_session", "lock"),
            ("backup", "_cmd_backup", "backup"),
            # issue 15 (compliance): appended at the end, so earlier draws keep their order
            ("cosign", "_cmd_access", "cosign"),
            ("rights", "_cmd_rights", "rights"),
            ("incident", "_cmd_incident", "incident"),
            ("serve", "_cmd_serve", "serve"),
            ("passphrase", "_cmd_passphrase", "passphrase"),
            ("upgrade", "_cmd_upgrade", "upgrade"),
            # issue 13 (witness): appended at the end, so earlier draws keep their order
            ("witness", "_cmd_serve", "witness"),
            # signed settings (issues 12, 15): appended at the end, as above
            ("settings", "_cmd_settings", "settings"),
            # issue 13 (witness keys recorded in the vault): appended at the end, as above
            ("witness-keys", "_cmd_witness_keys", "witness_keys_group"),
        )
    ),
)
# Commands may also be registered eagerly after these (imported here, then
# `cli.add_command(command)` and `_add_late_options(command)`): they keep the
# order of registration too.


# Global options after the command name (`childvault list --json`, `childvault
# approve R --as li`): every leaf command also takes --json, --as and --home,
# hidden from its help, and they set the same fields of the Ctx as the root
# options (the root callback has run by the time a subcommand parses).
def _set(ctx: click.Context, name: str, value: object) -> None:
    obj = ctx.find_object(Ctx)
    if obj is not None:
        setattr(obj, name, value)


def _late_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        _set(ctx, "as_json", True)


def _late_user(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        _set(ctx, "user", value)


def _late_home(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        _set(ctx, "home", value)


def _late_options() -> list[click.Option]:
    return [
        click.Option(
            ["--json"], is_flag=True, expose_value=False, hidden=True, callback=_late_json
        ),
        click.Option(["--as"], expose_value=False, hidden=True, callback=_late_user),
        click.Option(
            ["--home"],
            type=click.Path(file_okay=False, path_type=Path),
            expose_value=False,
            hidden=True,
            callback=_late_home,
        ),
    ]


def _add_late_options(command: click.Command) -> None:
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _add_late_options(sub)
        return
    taken = {opt for p in command.params for opt in p.opts}
    # A command with its own --home/--as (console) keeps its meaning of them.
    command.params.extend(o for o in _late_options() if not taken & set(o.opts))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="childvault")
