"""The insider helper the tamper tests use: it opens the database as any user
can (their key slot, nothing more) and its neutral operations do what they say."""

from __future__ import annotations

import pytest

from childvault.keys import Identity, NotFound
from tests._insider import Insider, at_least
from tests.conftest import ROLES, World


def test_opens_with_a_users_own_slot_from_a_world_or_a_home(world: World) -> None:
    with Insider(world, "worker2") as insider:
        names = {n for (n,) in insider.rows("users", ["name"])}
    assert names == {"admin", *ROLES}
    with Insider(world.home, world.ids["officer1"]) as insider:
        assert insider.count("users") == len(names)
        assert {"audit", "records", "fields", "keyblobs"} <= set(insider.tables())
    with pytest.raises(TypeError, match="unlocked Identity"):
        Insider(world.home, "worker1")


def test_someone_without_a_key_slot_cannot_open(world: World) -> None:
    with pytest.raises(NotFound, match="no key slot"):
        Insider(world.home, Identity.generate("stranger"))


def test_insert_rows_update_delete(world: World) -> None:
    with Insider(world, "worker1") as insider:
        for i in range(3):
            insider.insert("imports", {"source": f"s{i}", "rows_done": i, "started_at": "t"})
        assert insider.rows("imports", ["source", "finished_at"], where={"rows_done": 1}) == [
            ("s1", None)
        ]
        assert insider.count("imports", where={"finished_at": None}) == 3
        assert insider.update("imports", {"finished_at": "u"}, {"rows_done": at_least(1)}) == 2
        assert insider.rows("imports", ["source"], where={"finished_at": None}) == [("s0",)]
        assert insider.delete("imports", where={"source": "s2"}) == 1
        ordered = insider.rows("imports", ["rows_done"], order_by="rows_done")
        assert ordered == [(0,), (1,)]
        assert insider.execute("SELECT count(*) FROM imports") == [(2,)]
        assert insider.delete("imports") == 2


def test_names_are_plain_identifiers_only(world: World) -> None:
    with Insider(world, "worker1") as insider:
        with pytest.raises(ValueError, match="plain table or column name"):
            insider.rows("audit; DROP TABLE audit")
        with pytest.raises(ValueError, match="plain table or column name"):
            insider.rows("audit", ['entry" FROM users --'])
        with pytest.raises(ValueError, match="nothing to update"):
            insider.update("audit", {}, {"seq": 0})
