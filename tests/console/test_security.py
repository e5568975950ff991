"""The console's security rules on their own: login token, sessions, request
checks, escaping and error statuses (no server, no browser; time is injected)."""

from __future__ import annotations

import pytest

from childvault.console._app import http_status
from childvault.console._format import local_time, split_label, visible
from childvault.console._security import (
    LOGIN_TTL_S,
    SESSION_IDLE_S,
    SESSION_MAX_S,
    Gate,
    csrf_ok,
    host_ok,
    origin_ok,
)
from childvault.keys import (
    AccessDenied,
    ApprovalInvalid,
    ConfigError,
    IntegrityError,
    NotFound,
    ProviderUnavailable,
    UsageError,
    ValidationError,
    WrongPassphrase,
)


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_login_token_works_once() -> None:
    gate = Gate("zh_CN", Clock())
    token = gate.new_login_token()
    assert len(token) >= 43  # 32 random bytes, base64url
    assert gate.redeem("not-the-token") is None
    session_id = gate.redeem(token)
    assert session_id is not None
    assert gate.redeem(token) is None
    session = gate.session(session_id)
    assert session is not None and session.lang == "zh_CN"
    assert gate.session("forged-session-id") is None


def test_the_login_token_expires() -> None:
    clock = Clock()
    gate = Gate("en", clock)
    token = gate.new_login_token()
    clock.now += LOGIN_TTL_S + 1
    assert gate.redeem(token) is None


def test_a_new_login_token_replaces_the_unused_one() -> None:
    gate = Gate("en", Clock())
    first = gate.new_login_token()
    second = gate.new_login_token()
    assert gate.redeem(first) is None
    assert gate.redeem(second) is not None


def test_sessions_end_when_idle_at_the_latest_after_the_maximum_and_on_logout() -> None:
    clock = Clock()
    gate = Gate("en", clock)
    idle = gate.redeem(gate.new_login_token())
    clock.now += SESSION_IDLE_S + 1
    assert gate.session(idle) is None

    busy = gate.redeem(gate.new_login_token())
    start = clock.now
    while clock.now - start <= SESSION_MAX_S:
        assert gate.session(busy) is not None
        clock.now += SESSION_IDLE_S / 2
    assert gate.session(busy) is None

    left = gate.redeem(gate.new_login_token())
    gate.end(left)
    assert gate.session(left) is None


def test_csrf_tokens_belong_to_their_session() -> None:
    gate = Gate("en", Clock())
    one = gate.session(gate.redeem(gate.new_login_token()))
    two = gate.session(gate.redeem(gate.new_login_token()))
    assert one is not None and two is not None
    assert csrf_ok(one, one.csrf)
    assert not csrf_ok(one, two.csrf)
    assert not csrf_ok(one, None)
    assert not csrf_ok(one, "")


@pytest.mark.parametrize(
    ("origin", "fetch_site", "allowed"),
    [
        ("http://127.0.0.1:8123", "same-origin", True),
        ("null", "same-origin", True),  # our own form under Referrer-Policy: no-referrer
        (None, None, True),  # not a browser form: the CSRF token decides
        ("null", None, False),  # an opaque origin (sandboxed frame, data: URL)
        ("http://127.0.0.1:9999", "same-site", False),  # another port on this machine
        ("http://evil.example", "cross-site", False),
        ("http://localhost:8123", None, False),
        (None, "cross-site", False),
        ("http://127.0.0.1:8123", "same-site", False),
    ],
)
def test_origin_rules(origin: str | None, fetch_site: str | None, allowed: bool) -> None:
    assert origin_ok(origin, fetch_site, 8123) is allowed


def test_only_127_0_0_1_with_our_port_is_a_valid_host() -> None:
    assert host_ok("127.0.0.1:8123", 8123)
    for host in ("localhost:8123", "127.0.0.1", "127.0.0.1:8124", "evil.example:8123", "", None):
        assert not host_ok(host, 8123)
    assert host_ok("127.0.0.1", 80)


def test_control_characters_are_made_visible() -> None:
    assert visible("a\x1b[2Jb\x07") == "a\\x1b[2Jb\\x07"
    assert visible("left\u202eright\u2066") == "left\\u202eright\\u2066"
    assert visible("two\nlines\tand tab") == "two\nlines\tand tab"
    assert visible("\r\x7f\x9b") == "\\x0d\\x7f\\x9b"
    assert visible(None) == ""
    # HTML is the template engine's job (autoescape): visible() leaves it alone.
    assert visible("<b>") == "<b>"


def test_times_are_shown_in_beijing_time() -> None:
    assert local_time("2026-11-24T16:30:00.000000Z") == "2026-11-25 00:30"
    assert local_time("") == ""
    assert local_time("not a time\x1b") == "not a time\\x1b"


def test_schema_descriptions_split_into_chinese_and_english() -> None:
    assert split_label("姓名 / Full name") == ("姓名", "Full name")
    assert split_label("no separator") == ("no separator", "no separator")


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UsageError("x"), 400),
        (ValidationError("x"), 400),
        (NotFound("x"), 404),
        (AccessDenied("x"), 403),
        (ApprovalInvalid("x"), 403),
        (WrongPassphrase("x"), 403),
        (IntegrityError("x"), 409),
        (ProviderUnavailable("x"), 503),
        (ConfigError("x"), 500),
    ],
)
def test_library_errors_map_to_http_statuses(error: Exception, status: int) -> None:
    assert http_status(error) == status  # type: ignore[arg-type]
