"""``childvault doctor``: check a home and report what is wrong and what to do."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childvault.keys import ChildVaultError
from childvault.vault._config import Config, Home

if TYPE_CHECKING:
    from childvault.vault._facade import Vault


def diagnose(home_path: Path, opener: Callable[[], Vault]) -> dict[str, Any]:
    """Run every check; never raises for a problem it can report."""
    checks: list[dict[str, str]] = []

    def add(name: str, status: str, message: str) -> None:
        checks.append({"name": name, "status": status, "message": message})

    home = Home(Path(home_path))
    try:
        config = Config.load(home)
        add("config", "ok", f"vault {config.vault_id}, provider {config.provider}")
    except ChildVaultError as exc:
        add("config", "fail", str(exc))
        return {"ok": False, "checks": checks}
    mode = stat.S_IMODE(home.path.stat().st_mode)
    if mode & 0o077:
        add("permissions", "warn", f"{home.path} is mode {mode:o}; run chmod 700 on it")
    else:
        add("permissions", "ok", f"{home.path} is private (mode {mode:o})")
    # A PostgreSQL store has no database file in the home.
    files = (
        (home.keyslots, home.schema)
        if config.store
        else (home.database, home.keyslots, home.schema)
    )
    for path in files:
        if not path.exists():
            add("files", "fail", f"{path} is missing: restore it from backup")
    witness = config.witness_path(home)
    if home.path.resolve() in witness.resolve().parents:
        add("witness", "warn", f"the witness {witness} is inside the home: move it to other media")
    elif witness.exists():
        add("witness", "ok", f"{witness} ({witness.stat().st_size} bytes)")
    else:
        add("witness", "warn", f"{witness} does not exist yet (created at the first checkpoint)")
    try:
        vault = opener()
    except ChildVaultError as exc:
        add("unlock", "fail", str(exc))
        return {"ok": False, "checks": checks}
    add("unlock", "ok", f"opened as {vault.user} ({', '.join(sorted(vault.roles))})")
    for name, status, message in vault.health():
        add(name, status, message)
    try:
        report = vault.verify_audit()
        add("audit", "ok", f"{report.entries} entries verified, {report.checkpoints} checkpoints")
    except ChildVaultError as exc:
        add("audit", "fail", str(exc))
    ok = all(c["status"] != "fail" for c in checks)
    return {"ok": ok, "checks": checks}
