"""``childvault doctor``: check a home and report what is wrong and what to do."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault._i18n import Message, _t, join
from childvault.keys import ChildVaultError, ConfigError
from childvault.vault._config import Config, Home

if TYPE_CHECKING:
    from childvault.vault._facade import Vault


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return str(uid)


def owner_problem(home_path: Path) -> Message | None:
    """Why the running user must not use the home at ``home_path``, or None.

    One vault home belongs to one operating-system account: its files are
    created 0600/0700 for that account, so another account (a colleague in a
    shared group, or root) either cannot read them or would leave files the
    owner cannot read. Shared-group homes are not supported: everyone runs
    childvault as the home's owner (``sudo -u OWNER``), or the home is served
    by ``childvault serve``.
    """
    try:
        owner = home_path.stat().st_uid
    except OSError:
        return None  # a missing home is reported by whoever needs it
    me = os.geteuid() if hasattr(os, "geteuid") else owner
    if owner == me:
        return None
    return _t(
        "{home} belongs to the system user {owner}, not to {me}: a vault home is used by "
        "its owner only (shared-group homes are not supported). Run childvault as that "
        "user, e.g. sudo -u {owner} childvault ...",
        home=home_path,
        owner=_user_name(owner),
        me=_user_name(me),
    )


def check_owner(home_path: Path) -> None:
    """Raise :class:`ConfigError` unless the running user owns the home (:func:`owner_problem`)."""
    problem = owner_problem(home_path)
    if problem is not None:
        raise ConfigError(problem)


def _message(exc: ChildVaultError) -> str:
    # The library's message as made (a Message stays translatable; JSON sees English).
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, str) else str(exc)


def diagnose(
    home_path: Path, opener: Callable[[], Vault], *, witness_keys: Sequence[str] = ()
) -> dict[str, Any]:
    """Run every check; never raises for a problem it can report.

    With ``witness_keys`` (HTTP witnesses' verifier keys, docs/server.md
    "Witness"), their cosignatures on the witness file are checked too;
    without them, those of the keys recorded in the vault (the signed
    ``witness_keys`` setting), and given keys that differ from the recorded
    ones are reported.
    """
    checks: list[dict[str, str]] = []

    def add(name: str, status: str, message: str) -> None:
        checks.append({"name": name, "status": status, "message": message})

    home = Home(Path(home_path))
    try:
        config = Config.load(home)
        add(
            "config",
            "ok",
            _t("vault {id}, provider {provider}", id=config.vault_id, provider=config.provider),
        )
    except ChildVaultError as exc:
        add("config", "fail", _message(exc))
        return {"ok": False, "checks": checks}
    problem = owner_problem(home.path)
    if problem is not None:
        add("owner", "fail", problem)
    mode = stat.S_IMODE(home.path.stat().st_mode)
    if mode & 0o077:
        add(
            "permissions",
            "warn",
            _t(
                "{home} is mode {mode}; run chmod 700 on it (group or other access is not "
                "supported: one system user owns a vault home)",
                home=home.path,
                mode=format(mode, "o"),
            ),
        )
    else:
        add(
            "permissions",
            "ok",
            _t("{home} is private (mode {mode})", home=home.path, mode=format(mode, "o")),
        )
    # A PostgreSQL store has no database file in the home.
    files = (
        (home.keyslots, home.schema)
        if config.store
        else (home.database, home.keyslots, home.schema)
    )
    for path in files:
        if not path.exists():
            add("files", "fail", _t("{path} is missing: restore it from backup", path=path))
    witness = config.witness_path(home)
    try:
        witness_mode: int | None = witness.lstat().st_mode
    except FileNotFoundError:
        witness_mode = None
    if witness_mode is not None and not stat.S_ISREG(witness_mode):
        # A symlink is not followed (it could name a copy the insider keeps).
        add(
            "witness",
            "fail",
            _t(
                "the witness {path} is not a regular file (a symbolic link?): "
                "put the witness file itself there",
                path=witness,
            ),
        )
    elif home.path.resolve() in witness.resolve().parents:
        add(
            "witness",
            "warn",
            _t("the witness {path} is inside the home: move it to other media", path=witness),
        )
    elif witness_mode is not None:
        add(
            "witness",
            "ok",
            _t("{path} ({size} bytes)", path=witness, size=witness.stat().st_size),
        )
    else:
        add(
            "witness",
            "warn",
            _t("{path} does not exist yet (created at the first checkpoint)", path=witness),
        )
    try:
        vault = opener()
    except ChildVaultError as exc:
        add("unlock", "fail", _message(exc))
        return {"ok": False, "checks": checks}
    add(
        "unlock",
        "ok",
        _t("opened as {user} ({roles})", user=vault.user, roles=join(", ", sorted(vault.roles))),
    )
    for name, status, message in vault.health():
        add(name, status, message)
    try:
        report = vault.verify_audit()
        add(
            "audit",
            "ok",
            _t(
                "{entries} entries verified, {checkpoints} checkpoints",
                entries=report.entries,
                checkpoints=report.checkpoints,
            ),
        )
    except ChildVaultError as exc:
        add("audit", "fail", _message(exc))
    recorded = recorded_witness_keys(vault)
    if witness_keys and recorded and set(witness_keys) != set(recorded):
        add(
            "witness keys",
            "warn",
            _t(
                "the given witness keys differ from those recorded in the vault: {recorded}",
                recorded=join(", ", recorded),
            ),
        )
    if not witness_keys and recorded:
        changes = witness_key_changes(vault)
        if changes:
            add("witness keys", "warn", witness_keys_changed_message(changes))
    witness_keys = list(witness_keys) or recorded
    if witness_keys:
        try:
            cosigned = vault.verify_cosignatures(list(witness_keys))
            add(
                "cosignatures",
                "ok",
                _t(
                    "{cosigned} checkpoint(s) cosigned by the witness, up to {size} entries.",
                    cosigned=cosigned["cosigned"],
                    size=cosigned["cosigned_size"],
                ),
            )
        except ChildVaultError as exc:
            add("cosignatures", "fail", _message(exc))
    ok = all(c["status"] != "fail" for c in checks)
    return {"ok": ok, "checks": checks}


def witness_key_changes(vault: Vault) -> list[dict[str, str]]:
    """Each change of the recorded witness keys after they were first recorded
    (``actor``, ``at``), oldest first; empty when they never changed or the log
    cannot be read (``audit verify`` reports that itself).

    One admin signs the setting, and the witness guards against the log's own
    keepers: a check that used the recorded keys says when they changed, so a
    swap is never silent (review finding RV-3, docs/server.md).
    """
    from childvault.vault._svc_settings import SettingsService

    try:
        history = SettingsService(vault._session).history("witness_keys")
    except ChildVaultError:
        return []
    changes: list[dict[str, str]] = []
    for before, after in itertools.pairwise(history):
        if before["value"] != after["value"]:
            changes.append({"actor": after["actor"], "at": after["at"]})
    return changes


def witness_keys_changed_message(changes: Sequence[Mapping[str, str]]) -> Message:
    """The warning for :func:`witness_key_changes` (the last change and how many)."""
    last = changes[-1]
    return _t(
        "the witness keys recorded in the vault were changed {count} time(s), last by "
        "{actor} at {at}; this check used the keys recorded now: if you did not expect "
        "the change, check again with --witness-key and a key you got from the witness "
        "itself",
        count=len(changes),
        actor=last["actor"],
        at=last["at"],
    )


def recorded_witness_keys(vault: Vault) -> list[str]:
    """The witness keys recorded in ``vault`` (its verified signed ``witness_keys``
    setting; empty when none is recorded or the setting cannot be read)."""
    from childvault.vault._settings import witness_keys

    try:
        return witness_keys(vault.setting("witness_keys"))
    except ChildVaultError:
        return []
