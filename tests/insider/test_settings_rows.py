"""Issues 12 and 15: settings and the other decision-bearing meta rows.

An insider (here a staff member with their own database key) edits ``meta``
with plain SQL. A signed setting's row has no effect (the verified
``setting.set`` or the default decides, and ``doctor`` reports the row); the
notice register, ``accepting_records``, the export releases and a request's
basis are checked against the verified log, and a disagreement is refused and
logged. A forged ``setting.set`` (a staff member's, an admin's on a compliance
setting, another vault's) stops verification instead of applying.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from childvault.keys import AccessDenied, IntegrityError, UsageError, ValidationError
from childvault.vault import Basis, Vault, _audit, _note, _settings, _statements
from childvault.vault._audit import Event
from childvault.vault._registrations import append_with_statements, with_statement
from childvault.vault._svc_settings import setting_statement
from childvault.vault._time import iso
from tests._insider import Insider
from tests.conftest import (
    PASSPHRASES,
    World,
    add_children,
    child_values,
    consent,
    lower_export_k,
)

#: A valid value other than the default for every signed setting.
OTHER = {
    "max_ttl_s": "2592000",
    "default_ttl_s": "2592000",
    "max_records": "10000",
    "max_uses": "1000",
    "consent_backdate_days": "366",
    "time_zone": "Pacific/Kiritimati",
    "export_min_k": "50",
    **{f"rights_deadline_days.{k}": "90" for k in _settings.RIGHTS_KINDS},
    # issue 13: the witnesses' verifier keys (an admin's signed setting).
    "witness_keys": _note.vkey("example-witness", bytes(32)),
}
OLD = date(2026, 6, 1)  # far beyond the default 30-day back-dating window
FORM = "ab" * 32


def _set_row(world: World, key: str, value: str | None) -> None:
    """The insider's edit: one meta row, with plain SQL."""
    with Insider(world, "worker1") as insider:
        insider.delete("meta", where={"key": key})
        if value is not None:
            insider.insert("meta", {"key": key, "value": value})


def _refusals(world: World, on: str) -> list[dict[str, object]]:
    with world.open("admin") as v:
        entries = [
            _audit.decode_entry(e) for e in v._session.db.audit.entries_by_action(("trust.refuse",))
        ]
    return [e for e in entries if e["detail"]["on"] == on]  # type: ignore[index]


def test_every_signed_setting_is_listed_with_a_different_test_value() -> None:
    assert set(OTHER) == set(_settings.SPECS)
    assert all(
        OTHER[k] != s.default and _settings.is_canonical(k, OTHER[k])
        for k, s in _settings.SPECS.items()
    )


@pytest.mark.parametrize("key", sorted(_settings.SPECS))
def test_an_edited_setting_row_has_no_effect_and_doctor_reports_it(world: World, key: str) -> None:
    _set_row(world, key, OTHER[key])
    with world.open("officer1") as v:
        default = _settings.SPECS[key].default
        assert str(v.setting(key)) == default
        listed = {s.key: s for s in v.list_settings()}[key]
        assert (listed.value, listed.source, listed.signed_by, listed.meta) == (
            default,
            "default",
            None,
            OTHER[key],
        )
        warned = [h for h in v.health() if h[0] == f"setting {key}"]
        assert warned and warned[0][1] == "warn" and "no signed statement" in warned[0][2]


def test_the_backdating_window_row_does_not_let_staff_backdate(world: World) -> None:
    """Issue 15 finding 2: widening the window with SQL lets nothing through."""
    _set_row(world, "consent_backdate_days", "366")
    with world.open("worker1") as v, pytest.raises(ValidationError, match="back-dating"):
        v.add_record("child", child_values(0), consent(consented_at=OLD))
    # The officer's signed setting does.
    with world.open("officer1") as v:
        done = v.set_setting("consent_backdate_days", " 0366 ")
        assert (done.value, done.source, done.signed_by) == ("366", "signed", "officer1")
    with world.open("worker1") as v:
        rid = v.add_record("child", child_values(0), consent(consented_at=OLD))
        assert v.consent_of(rid).consented_at == OLD
    # A row edited back down after the signed change is ignored as well.
    _set_row(world, "consent_backdate_days", "0")
    with world.open("worker1") as v:
        v.add_record("child", child_values(1), consent(consented_at=OLD))
        assert v.setting("consent_backdate_days") == "366"


def test_the_rights_deadline_row_does_not_move_the_deadline(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    _set_row(world, "rights_deadline_days.access", "90")
    received = date(2026, 11, 20)
    with world.open("officer1") as v:
        row = v.rights_open(
            "access", rid, requester="guardian", received=received, identity_checked=True
        )
        assert row.to_json()["deadline"] == (received + timedelta(days=15)).isoformat()
        v.set_setting("rights_deadline_days.access", "20")
        row = v.rights_open(
            "access", rid, requester="guardian", received=received, identity_checked=True
        )
        assert row.to_json()["deadline"] == (received + timedelta(days=20)).isoformat()


def test_the_approval_limit_rows_do_not_raise_the_limits(world: World) -> None:
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(ids, ["name"], "case_management", "家访")
    _set_row(world, "max_ttl_s", "2592000")
    with world.open("officer1") as v, pytest.raises(UsageError, match="at most 8:00:00"):
        v.approve(req, ttl=timedelta(days=2))
    with world.open("admin") as v:
        v.set_setting("max_ttl_s", str(3 * 86400))
    with world.open("officer1") as v:
        assert v.approve(req, ttl=timedelta(days=2)).uses == 1


def test_each_setting_needs_its_signer_role(world: World) -> None:
    with world.open("admin") as v, pytest.raises(AccessDenied):
        v.set_setting("time_zone", "UTC")  # a compliance setting: an officer's
    with world.open("officer1") as v, pytest.raises(AccessDenied):
        v.set_setting("max_uses", "20")  # an approval limit: an admin's
    with world.open("worker1") as v, pytest.raises(AccessDenied):
        v.set_setting("export_min_k", "10")
    with world.open("officer1") as v:
        for key, bad in (
            ("time_zone", "Mars/Olympus"),
            ("time_zone", "../../etc/passwd"),
            ("export_min_k", "2"),
            ("consent_backdate_days", "-1"),
            ("nonsense", "1"),
        ):
            with pytest.raises(UsageError):
                v.set_setting(key, bad)
        assert v.setting("time_zone") == "Asia/Shanghai"


def _forge(world: World, signer: str, key: str, value: str, vault_id: str | None = None) -> None:
    """Log a setting.set entry the way the library would, but signed by ``signer``
    (in their own name: an insider can write entries in their own name)."""
    with world.open(signer) as v:
        s = v._session
        now = s.clock()
        envelope = _statements.sign(
            setting_statement(vault_id or s.vault_id, iso(now), key, value), [world.ids[signer]]
        )
        event = Event(signer, "setting.set", detail=with_statement({"key": key}, envelope))
        with s.db.transaction():
            append_with_statements(s.db, [(event, envelope)], now)


@pytest.mark.parametrize(
    ("signer", "key", "value", "why"),
    [
        ("worker1", "consent_backdate_days", "366", "not signed by an active officer"),
        ("admin", "time_zone", "UTC", "not signed by an active officer"),
        ("officer1", "max_ttl_s", "2592000", "not signed by an active admin"),
        ("officer1", "time_zone", "UTC", "another vault"),
    ],
)
def test_a_forged_setting_statement_is_refused(
    world: World, signer: str, key: str, value: str, why: str
) -> None:
    other = "0" * 32 if why == "another vault" else None
    _forge(world, signer, key, value, other)
    with world.open("officer1") as v:
        with pytest.raises(IntegrityError, match=why):
            v._session.trust()
        # Nothing it said is used: the last verified state (without it) decides.
        assert str(v.setting(key)) == _settings.SPECS[key].default
        with pytest.raises(IntegrityError, match=why):
            v.verify_audit()


def test_notice_register_rows_are_checked_against_the_log(world: World) -> None:
    """An insider marks their own text as the published notice: refused and logged."""
    with world.open("worker1") as v:
        register = v.notices()
    register["evil"] = {"sha256": "00" * 32, "published_at": "2026-11-24", "by": "admin"}
    with Insider(world, "worker1") as insider:
        insider.update("meta", {"value": json.dumps(register)}, {"key": "notices"})
        insider.update("meta", {"value": "evil"}, {"key": "notice_version"})
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="notice"):
        v.add_record("child", child_values(0), consent(notice_version="evil"))
    with world.open("officer1") as v:
        assert any(h[0] == "notice" and h[1] == "fail" for h in v.health())
    assert _refusals(world, "notice")


def test_a_non_substantive_flag_added_by_sql_is_refused(world: World, tmp_path: Path) -> None:
    template = (Path(__file__).parents[2] / "childvault/vault/data/notice-template.md").read_text()
    text = template.replace("【", "").replace("】", "") + "\n负责人 电话 010-12345678\n"
    with world.open("admin") as v:
        v.publish_notice("2026-2", text.encode())
        register = v.notices()
    register["2026-2"].update(non_substantive=True, continues="2026-1")
    with Insider(world, "worker1") as insider:
        insider.update("meta", {"value": json.dumps(register)}, {"key": "notices"})
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="non-substantive"):
        v.notices()


def test_a_decommissioned_vault_cannot_be_reopened_by_sql(world: World, tmp_path: Path) -> None:
    with world.open("officer1") as v:
        v.cosign_decommission(tmp_path / "contacts.sealed")
    with world.open("admin") as v:
        v.decommission(confirm=True)
    _set_row(world, "accepting_records", "1")
    with world.open("worker1") as v, pytest.raises(IntegrityError, match="decommissioned"):
        v.add_record("child", child_values(0), consent())
    assert _refusals(world, "record.create")


def test_a_cleared_export_history_is_refused(world: World, tmp_path: Path) -> None:
    """Subtraction: clearing the record of earlier releases would let a difference out."""
    with world.open("worker1") as v:
        for i in range(0, 12, 2):
            v.add_record("child", child_values(i), consent(("case_management", "statistics")))
    with world.open("officer1") as v:
        lower_export_k(v)
        v.export_anonymized(tmp_path / "a.csv", k=3)
    _set_row(world, "export_releases", None)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="missing"):
        v.export_anonymized(tmp_path / "b.csv", k=3)
    assert _refusals(world, "export.anonymized")


def test_a_removed_basis_index_does_not_make_a_consent_request(world: World) -> None:
    """Deleting the index of a legal-obligation request would drop its second officer."""
    with world.open("worker1") as v:
        ids = add_children(v, 1)
        req = v.request_access(
            ids,
            ["name"],
            "legal_protection",
            "协助调查",
            basis=Basis(
                "legal_obligation", recipient="法院", provision="第一百一十条", assessment="P-1"
            ),
        )
    _set_row(world, f"request_basis:{req}", None)
    with world.open("officer1") as v, pytest.raises(IntegrityError, match="basis"):
        v.approve(req)
    assert _refusals(world, "request.basis")


def test_upgrade_signs_settings_kept_before_they_were_signed(world: World) -> None:
    """A vault made before this change kept a setting in meta: the default applies
    until `childvault upgrade` (run by the role that signs it) signs the value."""
    _set_row(world, "time_zone", "Europe/Berlin")
    _set_row(world, "max_uses", "20")
    with world.open("officer1") as v:
        assert v.setting("time_zone") == "Asia/Shanghai"
    for who in ("admin", "officer1"):
        report = Vault.upgrade(
            world.home, who, PASSPHRASES[who], confirm=lambda _: True, clock=world.clock
        )
        assert any("settings signed" in step for step in report.to_json()["steps"])
    with world.open("worker1") as v:
        assert (v.setting("time_zone"), v.setting("max_uses")) == ("Europe/Berlin", 20)
        assert not [h for h in v.health() if h[0].startswith("setting ")]


@given(st.sampled_from(sorted(_settings.SPECS)), st.text(max_size=40))
def test_the_value_parser_accepts_only_canonical_valid_values(key: str, text: str) -> None:
    try:
        value = _settings.parse(key, text)
    except UsageError:
        assert not _settings.is_canonical(key, text)
        return
    assert _settings.is_canonical(key, value) and _settings.parse(key, value) == value


#: The documented ranges (docs/trust.md, "Settings and other meta rows").
RANGES = {
    "max_ttl_s": (60, 30 * 86400),
    "default_ttl_s": (60, 30 * 86400),
    "max_records": (1, 10_000),
    "max_uses": (1, 1000),
    "consent_backdate_days": (0, 366),
    "export_min_k": (3, 1000),
    **{f"rights_deadline_days.{k}": (1, 90) for k in _settings.RIGHTS_KINDS},
}


@given(st.sampled_from(sorted(RANGES)), st.integers(-10, 10**7), st.sampled_from(["", "0", " "]))
def test_whole_number_settings_keep_their_range(key: str, n: int, pad: str) -> None:
    low, high = RANGES[key]
    text = (pad + str(n)) if n >= 0 else str(n)
    try:
        value = _settings.parse(key, text)
    except UsageError:
        assert not low <= n <= high
    else:
        assert low <= n <= high and value == str(n)


def test_settings_cli_lists_and_sets_in_both_languages(world: World) -> None:
    from tests.test_cli import js, run

    _set_row(world, "time_zone", "UTC")
    listed = {
        s["key"]: s for s in js(run(world, "worker1", "--json", "settings", "list"))["settings"]
    }
    assert listed["time_zone"] == {
        "key": "time_zone",
        "value": "Asia/Shanghai",
        "default": "Asia/Shanghai",
        "signer": "officer",
        "source": "default",
        "signed_by": None,
        "meta": "UTC",
    }
    r = run(world, "worker1", "--json", "settings", "set", "time_zone", "UTC")
    assert r.exit_code == 3, r.output
    r = run(world, "officer1", "--json", "settings", "set", "export_min_k", "2")
    assert r.exit_code == 2 and "from 3 to 1000" in js(r)["error"]["message"]
    r = run(world, "officer1", "--json", "settings", "set", "time_zone", "UTC")
    assert r.exit_code == 0 and js(r)["setting"] == {
        "key": "time_zone",
        "value": "UTC",
        "default": "Asia/Shanghai",
        "signer": "officer",
        "source": "signed",
        "signed_by": "officer1",
        "meta": None,
    }
    human = run(world, "admin", "settings", "list", env={"LANG": "zh_CN.UTF-8"})
    assert human.exit_code == 0 and "UTC" in human.output and "已签名" in human.output
    r = run(
        world, "officer1", "settings", "set", "time_zone", "Mars/Base", env={"LANG": "zh_CN.UTF-8"}
    )
    assert r.exit_code == 2 and "IANA 时区" in r.stderr
