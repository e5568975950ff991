"""``TrustState.copy``: the server copies its verified state before every replay
(a refused batch must leave it intact); the copy is built member by member
instead of through the saved form. It must equal that round trip and share
nothing a replay changes.
"""

from __future__ import annotations

import dataclasses

from childvault.vault._statements import Anchor, TrustState, UserState


def _state() -> TrustState:
    anchor = Anchor("a" * 32, "admin", b"k" * 32)
    state = TrustState.start(anchor)
    state.users = {
        "admin": UserState("admin", ("admin",), b"e" * 32, b"s" * 32, 0, None, 0),
        "officer1": UserState("officer1", ("officer",), b"f" * 32, b"t" * 32, 2, 9, 5),
        "partner": UserState(
            "partner",
            ("staff",),
            b"g" * 32,
            b"u" * 32,
            3,
            None,
            3,
            {"organisation": "Org", "agreement": "A-1", "expires": "2030-01-01"},
        ),
    }
    state.retired_keys = {"officer1": [("00" * 32, 2, 5)]}
    state.custodians = {1: b"c" * 32, 2: b"d" * 32}
    state.holders = {1: {"officer1"}, 2: {"officer1", "admin"}}
    state.had_officer = True
    state.applied = 12
    state.settings = {"max_uses": "3"}
    state.unverified = {"pending1"}
    return state


def test_the_copy_is_the_saved_form_read_back() -> None:
    state = _state()
    copied = state.copy()
    assert copied == state
    assert copied == TrustState.from_bytes(state.to_bytes(), state.anchor)
    assert copied.to_bytes() == state.to_bytes()
    empty = TrustState.start(state.anchor)
    assert empty.copy() == empty


def test_changing_the_copy_leaves_the_original() -> None:
    state = _state()
    before = state.to_bytes()
    copied = state.copy()
    copied.users["officer1"].active_until = None
    copied.users["officer1"].roles = ("officer", "admin")
    assert copied.users["partner"].entrusted is not None
    copied.users["partner"].entrusted["expires"] = "2099-01-01"
    copied.users["new"] = UserState("new", ("staff",), b"h" * 32, b"v" * 32, 13)
    copied.retired_keys["officer1"].append(("11" * 32, 5, 13))
    copied.custodians[3] = b"x" * 32
    copied.holders[2].add("new")
    copied.had_officer = False
    copied.applied += 1
    copied.settings["max_uses"] = "1"
    copied.unverified.add("other")
    assert state.to_bytes() == before
    assert state == _state()


def test_every_member_is_one_copy_knows() -> None:
    # A member added to either class must be copied too (TrustState.copy).
    assert [f.name for f in dataclasses.fields(TrustState)] == [
        "anchor",
        "users",
        "retired_keys",
        "custodians",
        "holders",
        "had_officer",
        "applied",
        "settings",
        "unverified",
    ]
    assert [f.name for f in dataclasses.fields(UserState)] == [
        "name",
        "roles",
        "enc_key",
        "sign_key",
        "active_from",
        "active_until",
        "key_from",
        "entrusted",
    ]
