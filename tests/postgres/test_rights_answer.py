"""A subject report closes its rights request on either store (issue 15, session 11).

The closing counts only with the report, its read and the officer's approval in
the log, found through the grant index (``entries_by_ref``) that both stores
derive from the entry bytes: the same answer from SQLCipher and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from childvault.vault import _tokens
from childvault.vault._audit import Event
from tests.conftest import World, add_children


def test_a_subject_report_answers_its_rights_request_and_a_claim_does_not(
    any_world: World,
) -> None:
    world = any_world
    with world.open("worker1") as v:
        a, b = add_children(v, 2)
        req = v.request_access([b], ["name"], "case_management", "本人查询")
    with world.open("officer1") as v:
        claimed, answered = (
            v.rights_open(
                "access", r, requester="child", received=date(2026, 11, 24), identity_checked=True
            ).id
            for r in (a, b)
        )
        token = v.approve(req).token
    grant = _tokens.verify(token, world.ids["officer1"].public.signing_key).jti
    detail = {"rights": claimed, "answer": "report.subject", "outcome": "done"}
    with world.open("worker2") as v:
        v._session.log(
            [Event("worker2", "rights.close", records=[a], grant=grant, detail=detail)],
            datetime.now(UTC),
        )
    with world.open("worker1") as v:
        v.subject_report(b, token, rights_request=answered)
    with world.open("officer1") as v:
        status = {r.id: r.status for r in v.rights_list()}
    assert status == {claimed: "open", answered: "closed"}
