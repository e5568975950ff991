"""The P-10 notice: publish checks its items; non-substantive versions; reads re-check
(issue 15 finding 6)."""

from __future__ import annotations

import pytest

from childvault.keys import AccessDenied, ApprovalInvalid, UsageError
from childvault.vault._svc_notices import notice_problems
from tests.compliance._notice import filled_notice
from tests.conftest import World, add_children


def test_any_text_no_longer_passes_as_the_notice(world: World) -> None:
    """Finding 6: "hello" was accepted as the P-10 notice."""
    with world.open("admin") as v:
        with pytest.raises(UsageError, match="P-10 item 1"):
            v.publish_notice("2027-1", b"hello")
        template = filled_notice().decode()
        for missing, why in (
            ("我拒绝", "refusal"),
            ("010-12345678", "contact"),
        ):
            text = template.replace(missing, "").replace("I refuse", "")
            assert any(why in p for p in notice_problems(text.encode()))
        assert notice_problems(filled_notice()) == []
        assert v.publish_notice("2027-1", filled_notice())["version"] == "2027-1"


def test_unfilled_placeholders_are_refused() -> None:
    from importlib import resources

    raw = resources.files("childvault.vault").joinpath("data/notice-template.md").read_bytes()
    assert any("placeholders" in p for p in notice_problems(raw))


def test_a_non_substantive_version_keeps_consents_and_a_substantive_one_stops_reads(
    world: World,
) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
        req = v.request_access([rid], ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        token = v.approve(req, uses=3).token
    with world.open("admin") as v:
        v.publish_notice("2026-2", filled_notice("错别字更正"), non_substantive=True)
    with world.open("worker1") as v:
        assert v.read_with_grant(token)[rid]["name"]  # consent under 2026-1 still valid
        req2 = v.request_access([rid], ["name"], "case_management", "家访")
    with world.open("officer1") as v:
        assert v.approve(req2).grant_id
    with world.open("admin") as v:
        v.publish_notice("2027-1", filled_notice("新增用途"))  # substantive
    with world.open("worker1") as v, pytest.raises(ApprovalInvalid):
        v.read_with_grant(token)  # reads re-check the notice rule
    with world.open("worker1") as v:
        req3 = v.request_access([rid], ["name"], "case_management", "家访")
    with world.open("officer1") as v, pytest.raises(AccessDenied, match="renew"):
        v.approve(req3)
