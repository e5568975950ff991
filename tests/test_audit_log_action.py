"""`audit log --action` refuses an action that does not exist (issue 16's filters).

Found by the issue 16 audit: a misspelt action (``grant.reads``) or a family
without its dot matched nothing and printed nothing with exit 0, which an
officer checking a child's history reads as "nobody read it". It is a usage
error now (exit 2, nothing logged); real actions and families still filter.
"""

from __future__ import annotations

import json

from tests.conftest import World, add_children
from tests.i18n._helpers import EN, ZH, run_as


def _log_size(world: World) -> int:
    with world.open("admin") as v:
        return len(list(v.audit_entries()))


def test_an_unknown_action_is_a_usage_error_and_known_ones_filter(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 1)
    before = _log_size(world)
    for wrong in ("grant.reads", "request", "nothing."):
        r = run_as(world, "officer1", "audit", "log", "--action", wrong, lang=EN)
        assert r.exit_code == 2, (wrong, r.output)
        assert f"unknown action {wrong}" in r.stderr
    zh = run_as(world, "officer1", "audit", "log", "--action", "grant.reads", lang=ZH)
    assert zh.exit_code == 2 and "未知的操作 grant.reads" in zh.stderr
    assert _log_size(world) == before  # refused before the vault was opened
    for right, expected in (("record.create", {"record.create"}), ("record.", {"record.create"})):
        r = run_as(world, "officer1", "--json", "audit", "log", "--action", right, lang=EN)
        assert r.exit_code == 0, r.output
        actions = {e["entry"]["action"] for e in json.loads(r.stdout)["entries"]}
        assert actions == expected
