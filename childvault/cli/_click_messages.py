"""click's own messages, marked here so they are extracted into the catalog.

click marks its usage errors and help headings with the stdlib ``gettext``
(domain ``messages``); :mod:`childvault.cli.main` routes them through the
childvault catalog instead. Listing them here makes the extractor (and the
missing-translation test) see them. The text must match click's exactly,
placeholders included.
"""

from __future__ import annotations

from childvault._i18n import N_


def ngettext(singular: str, plural: str, n: int) -> tuple[str, str]:
    """Mark a plural message of click for extraction (both forms)."""
    return singular, plural


#: click's messages a user of the CLI can meet (help headings and usage errors).
MESSAGES = (
    N_("Usage:"),
    N_("Options"),
    N_("Commands"),
    N_("Show this message and exit."),
    N_("Show the version and exit."),
    N_("%(prog)s, version %(version)s"),
    N_("Error: {message}"),
    N_("Try '{command} {option}' for help."),
    N_("Aborted!"),
    N_("Missing argument"),
    N_("Missing command."),
    N_("Missing option"),
    N_("Missing parameter"),
    N_("No such command {name!r}."),
    N_("No such option {name!r}."),
    N_("Option {name!r} does not take a value."),
    N_("Invalid value for {param_hint}: {message}"),
    N_("Invalid value: {message}"),
    N_("{value!r} is not a valid {number_type}."),
    N_("{value} is not in the range {range}."),
    N_("{name} {filename!r} does not exist."),
    N_("{name} {filename!r} is a directory."),
    N_("{name} {filename!r} is a file."),
    N_("{name} {filename!r} is not readable."),
    N_("file"),
    N_("directory"),
    N_("path"),
    N_("default: {default}"),
    N_("env var: {var}"),
    N_("Repeat for confirmation"),
    N_("Error: The two entered values do not match."),
    N_("Do you want to continue?"),
    N_("Confirm the action without prompting."),
    ngettext(
        "Got unexpected extra argument ({args})", "Got unexpected extra arguments ({args})", 1
    ),
    ngettext(
        "Option {name!r} requires an argument.", "Option {name!r} requires {nargs} arguments.", 1
    ),
    ngettext("{value!r} is not {choice}.", "{value!r} is not one of {choices}.", 1),
    ngettext("Did you mean {possibility}?", "(Did you mean one of: {possibilities}?)", 1),
)
