"""Shared fixtures.

Identity files use Argon2id MODERATE (about a second per unlock), so the
session builds one template home with five users once, keeps their unlocked
identities, and every test gets a fresh copy of that home. Time is a
:class:`childvault.testing.FakeClock` injected into the vault: expiry and retention are tested by
moving it, never by sleeping.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from childvault.keys import Identity
from childvault.testing import DEFAULT_START, FakeClock
from childvault.vault import (
    Consent,
    LocalKeys,
    NewRecordInput,
    OpenBaoCredentials,
    OpenBaoKeys,
    Vault,
)
from childvault.vault._time import today as _legal_day

PASSPHRASES = {
    "admin": "admin-passphrase-1",
    "officer1": "officer1-passphrase",
    "officer2": "officer2-passphrase",
    "worker1": "worker1-passphrase",
    "worker2": "worker2-passphrase",
}
ROLES = {
    "officer1": ("officer",),
    "officer2": ("officer",),
    "worker1": ("staff",),
    "worker2": ("staff",),
}
#: Where every test clock starts (the public FakeClock default).
START = DEFAULT_START
#: Today by the system clock. A test whose vault runs on it (the CLI, the console,
#: the server and worker subprocesses, ``Vault.open`` without ``clock=``) dates
#: children, consents and retention from here (``child_values(today=TODAY)``,
#: ``consent(today=TODAY)``, :func:`born_years_ago`, :func:`years_ahead`): fixed
#: dates there expire (a ten-year-old turns 14, a consent leaves the back-dating
#: window, a retention date passes) and the test changes meaning. Tests on a
#: :class:`FakeClock` keep the dates of ``START``, which does not move. It is the
#: vault's legal day (Asia/Shanghai, the default zone), not the machine's: from
#: 16:00 UTC the two differ, and a consent dated by the machine's day looked a
#: day old to the vault.
TODAY = _legal_day(datetime.now(UTC))


def born_years_ago(years: int, today: date = TODAY) -> date:
    """The day a child turns ``years`` old on ``today`` (28 February for a 29 February)."""
    try:
        return today.replace(year=today.year - years)
    except ValueError:  # 29 February in a year that has none
        return today.replace(year=today.year - years, day=28)


def years_ahead(years: int, today: date = TODAY) -> date:
    """1 January ``years`` years after ``today``'s year: a retention date that stays ahead."""
    return date(today.year + years, 1, 1)


# No per-example deadline: a deadline is a timing assertion, and on a loaded
# 2-core CI machine it fails tests that are correct (speed is measured in
# bench/, never here). Bounded-time properties use explicit, generous limits.
settings.register_profile("childvault", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("childvault")


#: The locale every test runs in unless it asks for another with
#: ``@pytest.mark.locale("zh_CN.UTF-8")``: English, so CLI output is the same on
#: every developer's and CI machine whatever their shell's language.
TEST_LANG = "C.UTF-8"


@pytest.fixture(autouse=True)
def _pinned_locale(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Pin ``LANG`` (and clear ``LC_ALL`` / ``LC_MESSAGES``) for every test.

    A developer whose shell runs in Chinese would otherwise see CLI tests that
    pin English text fail (or, worse, pass only in their language). A test that
    is about another language opts in with the ``locale`` marker; tests that
    pass an explicit environment to a runner or subprocess keep doing so.
    """
    marker = request.node.get_closest_marker("locale")
    lang = str(marker.args[0]) if marker is not None and marker.args else TEST_LANG
    monkeypatch.setenv("LANG", lang)
    for name in ("LC_ALL", "LC_MESSAGES"):
        monkeypatch.delenv(name, raising=False)
    return lang


@dataclass
class World:
    """A vault home with five users, their unlocked identities and a clock."""

    home: Path
    ids: dict[str, Identity]
    clock: FakeClock = field(default_factory=FakeClock)
    #: Vault provider only: each user's Vault token (policy by role).
    tokens: dict[str, str] = field(default_factory=dict)
    provider: str = "local"

    def open(self, who: str) -> Vault:
        return Vault.open(
            self.home,
            identity=self.ids[who],
            clock=self.clock,
            credentials=OpenBaoCredentials(token=self.tokens.get(who)),
        )

    @property
    def witness(self) -> Path:
        return self.home.parent / f"{self.home.name}.witness.jsonl"


def consent(
    purposes: tuple[str, ...] = ("case_management",),
    *,
    by: str = "guardian",
    retain_until: date | None = None,
    consented_at: date | None = None,
    notice_version: str = "2026-1",
    guardian_informed: bool = False,
    today: date | None = None,
) -> Consent:
    """A valid consent. Dated for a :class:`FakeClock` at ``START`` (given on
    2026-11-01, kept until 2032-01-01); with ``today`` (``TODAY`` for a vault on
    the system clock), given that day and kept six years on, so it is never
    back-dated nor past retention whenever the test runs."""
    if today is None:
        given, kept = date(2026, 11, 1), date(2032, 1, 1)
    else:
        given, kept = today, years_ahead(6, today)
    return Consent(
        by=by,
        consented_at=given if consented_at is None else consented_at,
        notice_version=notice_version,
        purposes=purposes,
        retain_until=kept if retain_until is None else retain_until,
        guardian_informed=guardian_informed,
    )


def child_values(i: int = 0, *, today: date | None = None, **overrides: str) -> dict[str, str]:
    """Valid values for a child of about ten (9 to 11) on ``today``, varied by ``i``.

    ``today`` defaults to ``START``'s day, for a vault on a :class:`FakeClock`
    (born 2016); a vault on the system clock passes ``TODAY``, so its children
    never reach 14 (when their own consent becomes due) as the years pass.
    """
    from childvault.vault._validators import make_id_number

    anchor = START.date() if today is None else today
    dob = date(anchor.year - 10, 3, 1) + timedelta(days=i % 300)
    values = {
        "name": f"测试儿童{i}",
        "sex": "male" if i % 2 else "female",  # matches the id number's sex digit
        "date_of_birth": dob.isoformat(),
        # Birth day and sequence repeat every 1200 children: from there on another
        # district code keeps identity numbers distinct (imports refuse duplicates).
        "id_number": make_id_number(
            f"{110105 + i // 1200:06d}", dob, 100 + (i % 400) * 2 + (i % 2)
        ),
        "address": f"北京市朝阳区测试街道{i}号",
        "school": "测试小学",
        "guardian_name": f"测试监护人{i}",
        "guardian_phone": f"138{i:08d}"[:11],
        "difficulty_category": "poverty",
        "health": "良好",
        "case_notes": f"测试个案记录 {i}",
    }
    values.update(overrides)
    return values


def lower_export_k(v: Vault) -> None:
    """Lower the vault's smallest export k to 3, the floor (the default is 5), for
    tests whose few records make classes of 3 or 4."""
    v.set_setting("export_min_k", "3")


def add_children(
    v: Vault, n: int, *, purposes: tuple[str, ...] = ("case_management",)
) -> list[str]:
    """Add ``n`` valid child records; return their ids (dated for the vault's clock:
    ``START`` on a :class:`FakeClock` near it, else the clock's legal day, so a vault
    on the system clock, or a fake one moved to now, never finds their consents
    back-dated, whatever day the test runs)."""
    clock = v._session.clock
    day = _legal_day(clock())
    near_start = isinstance(clock, FakeClock) and abs((day - START.date()).days) < 7
    today = None if near_start else day
    return v.add_records(
        [
            NewRecordInput("child", child_values(i, today=today), consent(purposes, today=today))
            for i in range(n)
        ]
    )


def build_template(
    home: Path, *, provider: str = "local", vault_settings: dict[str, object] | None = None
) -> dict[str, Identity]:
    """Create a home with the five users of :data:`ROLES` plus admin; return identities."""
    clock = FakeClock()
    with Vault.init(
        home,
        institution="测试福利院",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        clock=clock,
        keys=OpenBaoKeys.from_mapping(vault_settings or {}) if provider == "vault" else LocalKeys(),
    ) as v:
        for name, roles in ROLES.items():
            v.add_user(name, roles, PASSPHRASES[name])
    ids = {
        name: Identity.load(home / "identities" / f"{name}.id", secret)
        for name, secret in PASSPHRASES.items()
    }
    if provider == "local":
        with Vault.open(home, identity=ids["officer1"], clock=clock) as v:
            v.share_custodian("officer2")
    return ids


def copy_world(src: Path, ids: dict[str, Identity], dest_dir: Path, **kwargs: object) -> World:
    """A fresh copy of a template home (and its witness) in ``dest_dir``."""
    home = dest_dir / "home"
    shutil.copytree(src, home)
    witness = src.parent / f"{src.name}.witness.jsonl"
    if witness.exists():
        shutil.copy(witness, dest_dir / "home.witness.jsonl")
    return World(home, ids, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Identity]]:
    home = tmp_path_factory.mktemp("template") / "home"
    return home, build_template(home)


@pytest.fixture
def world(template: tuple[Path, dict[str, Identity]], tmp_path: Path) -> Iterator[World]:
    src, ids = template
    yield copy_world(src, ids, tmp_path)


# One PostgreSQL server and one OpenBao Raft cluster for the whole session,
# shared by tests/postgres and tests/scale (started only when a test asks).
from tests.fixtures.sessions import postgres, raft_cluster  # noqa: E402, F401
