"""The public API fails fast: wrong argument types raise errors of the tree.

Issue 18 lists inputs that escaped the error hierarchy (``TypeError`` from
``unicodedata``, ``AttributeError``, ``ValueError``) or gave a plausible but
wrong result (a string of ids iterated character by character, a misspelt
request status matching nothing). Each is pinned here, and a property test
calls every public method of :class:`Vault` with values of the wrong type:
only :class:`ChildVaultError` subclasses may escape.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from childvault._i18n import localize
from childvault.keys import Identity, VaultSettings
from childvault.vault import (
    ChildVaultError,
    Consent,
    NewRecordInput,
    UsageError,
    Vault,
)
from tests.conftest import PASSPHRASES, World, add_children, child_values, consent


def test_a_bytes_passphrase_is_a_usage_error(world: World) -> None:
    path = world.home / "identities" / "worker1.id"
    with pytest.raises(UsageError, match="passphrase must be a string"):
        Identity.load(path, PASSPHRASES["worker1"].encode())  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="'passphrase' must be a string"):
        Vault.open(world.home, "worker1", PASSPHRASES["worker1"].encode())  # type: ignore[arg-type]


def test_identity_load_takes_a_str_path_and_unlock_takes_a_name(world: World) -> None:
    path = world.home / "identities" / "worker1.id"
    by_str = Identity.load(str(path), PASSPHRASES["worker1"])
    by_name = Identity.unlock(str(world.home), "worker1", PASSPHRASES["worker1"])
    assert by_str.public == by_name.public == world.ids["worker1"].public
    with pytest.raises(UsageError, match="path"):
        Identity.load(42, PASSPHRASES["worker1"])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="invalid user name"):
        Identity.unlock(world.home, 7, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"consented_at": "2026-11-01"},
        {"retain_until": datetime(2032, 1, 1, tzinfo=UTC)},
        {"purposes": "case_management"},
        {"guardian_informed": "no"},
    ],
)
def test_consent_with_wrong_types_is_refused(world: World, changes: dict[str, Any]) -> None:
    fields = {**consent().__dict__, **changes}
    bad = Consent(**fields)
    name = next(iter(changes))
    with world.open("worker1") as v, pytest.raises(UsageError, match=f"consent.{name}"):
        v.add_record("child", child_values(), bad)


def test_json_settings_are_refused(tmp_path: Path) -> None:
    from childvault.vault import OpenBaoKeys

    text = VaultSettings("http://127.0.0.1:8200").to_json()
    with pytest.raises(UsageError, match="'settings' must be a VaultSettings"):
        OpenBaoKeys(text)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="'settings' must be a mapping"):
        OpenBaoKeys.from_mapping(text)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="'keys'"):
        Vault.init(
            tmp_path / "h",
            institution="x",
            admin="admin",
            admin_passphrase=PASSPHRASES["admin"],
            keys=text,  # type: ignore[arg-type]
        )
    assert not (tmp_path / "h").exists()


def test_a_string_where_ids_are_expected_is_refused(world: World) -> None:
    with world.open("worker1") as v:
        [rid] = add_children(v, 1)
        with pytest.raises(UsageError, match="'records' must be a list of strings"):
            v.request_access(rid, ["name"], "case_management", "visit")
        with pytest.raises(UsageError, match="'fields' must be a list of strings"):
            v.request_access([rid], "name", "case_management", "visit")
        with pytest.raises(UsageError, match="'items' must be a list"):
            v.add_records(NewRecordInput("child", child_values(), consent()))  # type: ignore[arg-type]


def test_an_unknown_request_status_is_refused(world: World) -> None:
    with world.open("officer1") as v:
        with pytest.raises(UsageError, match="'status' must be one of pending, approved, denied"):
            v.requests("pendng")
        assert v.requests("approved") == []
        assert v.requests(None) == []


def test_an_unknown_setting_name_is_a_usage_error_naming_the_known_ones(world: World) -> None:
    """Issue 18: an unknown name is the caller's mistake (UsageError, exit 2), not a
    damaged vault (ConfigError); the message names every setting that reads."""
    with world.open("officer1") as v:
        with pytest.raises(UsageError) as raised:
            v.setting("max_use")
        message = raised.value.args[0]
        assert "unknown setting 'max_use'" in message
        known = str(message).split("one of ", 1)[1].split(", ")
        assert {"max_uses", "time_zone", "vault_id", "notice_version"} <= set(known)
        assert "未知的设置 'max_use'" in localize(message, "zh_CN")
        # Every name it offers reads on a fresh vault (none is a missing row).
        for name in known:
            v.setting(name)


def test_a_closed_vault_says_it_is_closed(world: World) -> None:
    v = world.open("worker1")
    v.close()
    v.close()  # harmless
    for call in (v.list_records, v.users, lambda: v.setting("max_uses"), v.checkpoint):
        with pytest.raises(UsageError, match="this Vault is closed"):
            call()


def test_naive_datetimes_are_refused(world: World) -> None:
    with world.open("officer1") as v, pytest.raises(UsageError, match="timezone-aware"):
        v.checkpoint(now=datetime(2026, 11, 24, 9, 0))


# ---------------------------------------------------------------- property

#: Values of every kind a caller might pass by mistake.
WRONG = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=False),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.lists(st.integers(0, 3), max_size=3),
    st.lists(st.text(max_size=4), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just({"name": 1}),
    st.dates(),
    st.datetimes(),
    st.just(b"\x00"),
    st.just("\x00"),
)

#: Public methods that take arguments (those without are covered by the closed test).
METHODS = sorted(
    name
    for name, member in inspect.getmembers(Vault, inspect.isfunction)
    if not name.startswith("_")
    and name not in {"close", "init", "open"}
    and len(inspect.signature(member).parameters) > 1
)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Vault, Vault]]:
    """One staff and one officer vault, opened once for all examples."""
    from tests.conftest import build_template, copy_world

    base = tmp_path_factory.mktemp("failfast")
    src = base / "template" / "home"
    ids = build_template(src)
    world = copy_world(src, ids, base)
    old = Path.cwd()
    # Paths drawn by hypothesis are relative: keep anything they create in here.
    os.chdir(base)
    staff, officer = world.open("worker1"), world.open("officer1")
    try:
        add_children(staff, 2)
        yield staff, officer
    finally:
        staff.close()
        officer.close()
        os.chdir(old)


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=30)
@given(data=st.data())
def test_only_childvault_errors_escape(
    shared: tuple[Vault, Vault], method: str, data: st.DataObject
) -> None:
    vault = data.draw(st.sampled_from(shared), label="acting vault")
    params = list(inspect.signature(getattr(Vault, method)).parameters.values())
    if not isinstance(inspect.getattr_static(Vault, method), staticmethod):
        params = params[1:]  # self
    kwargs = {p.name: data.draw(WRONG, label=p.name) for p in params}
    with contextlib.suppress(ChildVaultError):
        getattr(vault, method)(**kwargs)


def test_only_childvault_errors_escape_open_and_init(tmp_path: Path) -> None:
    @settings(max_examples=40)
    @given(home=WRONG, user=WRONG, passphrase=WRONG, institution=WRONG)
    def run(home: Any, user: Any, passphrase: Any, institution: Any) -> None:
        target = tmp_path / "new"  # a successful init makes later ones refuse: fine
        with contextlib.suppress(ChildVaultError):
            Vault.open(home if home not in ("", None) else tmp_path, user, passphrase)
        with contextlib.suppress(ChildVaultError):
            Vault.init(
                target, institution=institution, admin=user, admin_passphrase=passphrase
            ).close()

    run()


def test_consent_and_dates_are_dates() -> None:
    c = consent()
    assert type(c.consented_at) is date and type(c.retain_until) is date
