"""The officers' console, clicked through in a real browser (Debian's chromium).

One ``childvault console`` subprocess and one browser serve the whole module;
the tests run in file order on one logged-in page (the login URL works once per
console process, as it should). Every decision taken in the browser is checked
afterwards with the library itself.

Screenshots go to ``$CHILDVAULT_SCREENSHOTS`` when set (``docs/img`` to refresh
the ones docs/console.md shows), else to a temporary directory.
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Iterator
from datetime import timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from childvault.vault import AccessDenied, ApprovalInvalid
from tests.conftest import TODAY, years_ahead
from tests.console.conftest import (
    CHROMIUM,
    HOSTILE_REASON,
    ConsoleHome,
    RunningConsole,
    stop_console,
)

if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium); install it with "
        "`apt-get install -y chromium fonts-wqy-microhei` (.ci/run does)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(scope="module")
def page(browser: Browser, running: RunningConsole) -> Iterator[Page]:
    """The officer's tab, not yet logged in (the first test logs in)."""
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="zh-CN")
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    tab.dialogs = dialogs  # type: ignore[attr-defined]
    yield tab
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("CHILDVAULT_SCREENSHOTS")
    target = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


def _request(home: ConsoleHome, rid: str) -> Any:
    with home.open("officer2") as v:
        return next(r for r in v.requests(None) if r.id == rid)


def test_the_one_time_link_logs_in_once(
    page: Page, browser: Browser, running: RunningConsole
) -> None:
    response = page.goto(running.login_url)
    assert response is not None and response.ok
    assert page.url == running.base + "/"
    assert page.locator("h1").inner_text() == "审批队列"
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    cookie = next(c for c in page.context.cookies() if c["name"] == "cv_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # The same link a second time (another browser profile, as an eavesdropper
    # who copied it would be) is refused, and so is the console without a session.
    other = browser.new_context()
    try:
        again = other.new_page()
        reused = again.goto(running.login_url)
        assert reused is not None and reused.status == 403
        assert "此登录链接已使用或已过期" in again.locator("#error-message").inner_text()
        anonymous = again.goto(running.base + "/")
        assert anonymous is not None and anonymous.status == 401
        assert again.locator("table").count() == 0
    finally:
        other.close()


def test_every_page_carries_the_security_headers(page: Page, running: RunningConsole) -> None:
    for path in ("/", "/grants", "/static/console.css", "/no-such-page"):
        response = page.goto(running.base + path)
        assert response is not None
        headers = response.headers
        assert headers["content-security-policy"] == CSP, path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] == "no-store"
    # Pages use no script at all.
    page.goto(running.base + "/")
    assert page.locator("script").count() == 0


def test_the_queue_lists_the_pending_requests_in_chinese(
    page: Page, running: RunningConsole, console_home: ConsoleHome, shots: Path
) -> None:
    page.goto(running.base + "/")
    for rid in console_home.requests.values():
        assert page.locator(f"#req-{rid}").count() == 1
    row = page.locator(f"#req-{console_home.requests['approve']}")
    text = row.inner_text()
    assert "worker1" in text and "家访前核对联系方式" in text and "个案管理" in text
    assert "姓名" in text and "监护人联系电话" in text
    assert "共有 4 项申请待审批" in page.locator("main").inner_text()
    page.screenshot(path=str(shots / "console-queue.png"), full_page=True)


def test_a_hostile_reason_is_shown_escaped(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    page.goto(f"{running.base}/requests/{console_home.requests['hostile']}")
    shown = page.locator("#reason").inner_text()
    assert "<script>alert('x')</script>" in shown
    # Terminal escapes and the right-to-left override are made visible, not obeyed.
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\x0d覆盖 & \\u202eevil" in shown
    assert "\x1b" not in shown and "\u202e" not in shown
    assert page.locator("script").count() == 0
    assert "&lt;script&gt;" in page.content()
    assert page.dialogs == []  # type: ignore[attr-defined]
    # The library still holds the reason exactly as filed.
    assert _request(console_home, console_home.requests["hostile"]).reason == HOSTILE_REASON


def test_the_request_page_shows_records_fields_and_history(
    page: Page, running: RunningConsole, console_home: ConsoleHome, shots: Path
) -> None:
    page.goto(f"{running.base}/requests/{console_home.requests['approve']}")
    assert page.locator("#status").inner_text() == "待审批"
    fields = page.locator("table.fields").inner_text()
    assert "姓名" in fields and "Full name" in fields and "监护人联系电话" in fields
    assert "中" in fields  # both fields are of medium sensitivity
    for record_id in console_home.records[:2]:
        section = page.locator(f"#rec-{record_id}").inner_text()
        assert "child" in section and years_ahead(6).isoformat() in section
        assert "个案管理" in section
        # The child's access history: who did what, newest first.
        history = page.locator(f"#rec-{record_id} table.history tbody tr")
        assert history.count() == 2
        assert "申请访问" in history.nth(0).inner_text()
        assert "创建档案" in history.nth(1).inner_text()
        assert "worker1" in history.nth(1).inner_text()
    page.screenshot(path=str(shots / "console-request.png"), full_page=True)


def test_approving_issues_a_token_the_requester_can_use(
    page: Page, running: RunningConsole, console_home: ConsoleHome, shots: Path
) -> None:
    rid = console_home.requests["approve"]
    page.goto(f"{running.base}/requests/{rid}")
    page.fill("input[name=ttl_minutes]", "30")
    page.fill("input[name=uses]", "2")
    page.click("#approve")
    assert page.locator("h1").inner_text() == "已批准", _error(page)
    token = page.locator("#token").input_value()
    grant_id = page.locator("#grant-id").inner_text()
    assert token.startswith("v4.public.")
    page.screenshot(path=str(shots / "console-approved.png"), full_page=True)

    # Saved as a file, once.
    with page.expect_download() as info:
        page.click("#save-token")
    saved = Path(info.value.path()).read_text(encoding="utf-8")
    assert saved.strip() == token
    assert info.value.suggested_filename == f"grant-{grant_id}.token"

    req = _request(console_home, rid)
    assert (req.status, req.decided_by) == ("approved", "officer1")
    with console_home.open("worker1") as v:
        values = v.read_with_grant(token)
    assert set(values) == set(console_home.records[:2])
    assert all(set(fields) == {"name", "guardian_phone"} for fields in values.values())
    console_home.requests["grant"] = grant_id
    console_home.requests["token"] = token


def test_revoking_the_grant_stops_the_token(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    grant_id = console_home.requests["grant"]
    page.goto(running.base + "/grants")
    row = page.locator(f"#grant-{grant_id}")
    assert "有效" in row.inner_text()
    row.locator("button", has_text="撤销").click()
    assert "授权已撤销" in page.locator(".flash").inner_text()
    assert page.locator("#no-active").count() == 1
    assert "已撤销" in page.locator(f"#grant-{grant_id}").inner_text()
    with console_home.open("worker1") as v, pytest.raises((ApprovalInvalid, AccessDenied)):
        v.read_with_grant(console_home.requests["token"])


def test_denying_records_the_reason(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    rid = console_home.requests["deny"]
    page.goto(f"{running.base}/requests/{rid}")
    page.fill("textarea[name=reason]", "未说明核实住址的必要性")
    page.click("#deny")
    assert page.url == f"{running.base}/requests/{rid}"
    assert page.locator("#status").inner_text() == "已拒绝"
    assert page.locator("#decision-reason").inner_text() == "未说明核实住址的必要性"
    req = _request(console_home, rid)
    assert (req.status, req.decided_by, req.decision_reason) == (
        "denied",
        "officer1",
        "未说明核实住址的必要性",
    )


def test_a_form_post_without_the_csrf_token_is_refused(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    rid = console_home.requests["forged"]
    url = f"{running.base}/requests/{rid}/deny"
    # The browser's own cookie goes with these posts: only the token is missing or wrong.
    missing = page.request.post(url, form={"reason": "forged"})
    assert missing.status == 403
    assert "安全令牌" in missing.text()
    wrong = page.request.post(url, form={"reason": "forged", "csrf": "A" * 43})
    assert wrong.status == 403
    approve = page.request.post(
        f"{running.base}/requests/{rid}/approve", form={"ttl_minutes": "60", "uses": "1"}
    )
    assert approve.status == 403
    assert _request(console_home, rid).status == "pending"


def test_a_form_from_another_site_is_refused(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    rid = console_home.requests["forged"]
    # The attacker's page, on another port of the same machine (same site, so even
    # the SameSite=Strict cookie goes along): only the Origin check stops it.
    html = (
        f'<form method="post" action="{running.base}/requests/{rid}/deny">'
        '<input name="reason" value="forged"><input name="csrf" value="guess">'
        '<button id="go">go</button></form>'
    ).encode()

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(html)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        attacker = f"http://127.0.0.1:{server.server_address[1]}/"
        page.goto(attacker)
        with page.expect_navigation() as nav:
            page.click("#go")
        response = nav.value
        assert response is not None and response.status == 403
        assert "此表单来自其他网站" in page.locator("#error-message").inner_text()
    finally:
        server.shutdown()
        server.server_close()
    assert _request(console_home, rid).status == "pending"


def test_only_127_0_0_1_is_accepted_as_host(running: RunningConsole) -> None:
    port = int(running.base.rsplit(":", 1)[1])
    for host in (f"localhost:{port}", f"evil.example:{port}", "127.0.0.1"):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            conn.request("GET", "/static/console.css", headers={"Host": host})
            response = conn.getresponse()
            body = response.read().decode()
            assert response.status == 421, host
            # In both languages: the refused page has no session, so no language yet.
            assert body.splitlines() == [
                "本控制台只在 127.0.0.1 上应答。",
                "This console answers only at 127.0.0.1.",
            ]
        finally:
            conn.close()


def test_the_language_switch(page: Page, running: RunningConsole) -> None:
    page.goto(running.base + "/grants")
    page.click("button[name=lang][value=en]")
    assert page.url == running.base + "/grants"
    assert page.locator("h1").inner_text() == "Grants"
    assert page.locator("html").get_attribute("lang") == "en"
    page.goto(running.base + "/")
    assert page.locator("h1").inner_text() == "Approval queue"
    assert "2 requests are waiting for a decision." in page.locator("main").inner_text()
    page.click("button[name=lang][value=zh_CN]")
    assert page.locator("h1").inner_text() == "审批队列"


def test_log_verification(page: Page, running: RunningConsole) -> None:
    response = page.goto(running.base + "/audit")
    assert response is not None and response.status == 200
    assert page.locator("#audit-ok").inner_text() == "审计日志完整，未被篡改。"
    assert int(page.locator("#audit-entries").inner_text()) > 10


def test_the_rights_register_shows_what_the_library_registered(
    page: Page, running: RunningConsole, console_home: ConsoleHome, shots: Path
) -> None:
    records = console_home.records
    with console_home.open("officer2") as v:
        # Received 40 days ago and not answered: past its deadline.
        late = v.rights_open(
            "correct",
            records[0],
            requester="guardian",
            received=TODAY - timedelta(days=40),
            identity_checked=True,
        )
        refused = v.rights_open(
            "access", records[1], requester="child", received=TODAY, identity_checked=False
        )
        v.rights_close(refused.id, "refused", reason=HOSTILE_REASON)
    page.goto(running.base + "/")
    page.click("nav a[href='/rights']")
    assert page.locator("h1").inner_text() == "权利请求登记"
    cells = page.locator(f"#rights-{late.id} td")
    # The register number, as `childvault rights close` takes it, and the record in full.
    assert cells.nth(0).inner_text() == late.id
    assert cells.nth(1).inner_text() == late.received.isoformat()
    assert cells.nth(2).inner_text() == "更正"
    assert cells.nth(3).inner_text() == "监护人"
    assert cells.nth(4).inner_text() == records[0]
    assert cells.nth(5).inner_text() == "是"
    assert cells.nth(6).inner_text() == f"{late.deadline.isoformat()} 已逾期"
    assert cells.nth(7).inner_text() == "未结"
    assert cells.nth(9).inner_text() == "officer2"
    row = page.locator(f"#rights-{refused.id} td")
    assert row.nth(2).inner_text() == "查阅或复制"
    assert row.nth(3).inner_text() == "儿童本人"
    assert row.nth(5).inner_text() == "否"
    assert row.nth(7).inner_text() == "已结案"
    outcome = row.nth(8).inner_text()
    # The refusal's reason is data: escaped, its control characters made visible.
    assert "被拒绝" in outcome and "<script>alert('x')</script>" in outcome
    assert "\\x1b]0;pwned" in outcome and "\x1b" not in outcome
    assert page.locator("script").count() == 0
    # Open requests first.
    ids = [page.locator("tr[id^=rights-]").nth(i).get_attribute("id") for i in range(2)]
    assert ids == [f"rights-{late.id}", f"rights-{refused.id}"]
    page.screenshot(path=str(shots / "console-rights.png"), full_page=True)


def test_a_rights_request_is_closed_in_the_console(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    with console_home.open("officer2") as v:
        (late,) = [r for r in v.rights_list() if r.status == "open"]
    page.goto(running.base + "/rights")
    form = page.locator(f"#rights-{late.id} form.close-rights")
    # A refusal needs a reason: the library refuses, the page says so, nothing changes.
    form.locator("select[name=outcome]").select_option("refused")
    with page.expect_navigation() as nav:
        form.locator("button").click()
    response = nav.value
    assert response is not None and response.status == 400
    assert page.locator("#error-message").count() == 1
    # A forged close (no CSRF token) is refused too.
    forged = page.request.post(
        f"{running.base}/rights/{late.id}/close", form={"outcome": "withdrawn"}
    )
    assert forged.status == 403
    with console_home.open("officer2") as v:
        assert next(r for r in v.rights_list() if r.id == late.id).status == "open"

    page.goto(running.base + "/rights")
    form = page.locator(f"#rights-{late.id} form.close-rights")
    form.locator("select[name=outcome]").select_option("withdrawn")
    form.locator("input[name=reason]").fill("监护人撤回请求")
    form.locator("button").click()
    assert page.url == running.base + "/rights"
    assert "权利请求已结案" in page.locator(".flash").inner_text()
    cells = page.locator(f"#rights-{late.id} td")
    assert cells.nth(7).inner_text() == "已结案"
    assert cells.nth(8).inner_text().startswith("已撤回")
    assert page.locator(f"#rights-{late.id} form").count() == 0
    with console_home.open("officer2") as v:
        closed = next(r for r in v.rights_list() if r.id == late.id)
    assert (closed.status, closed.outcome) == ("closed", "withdrawn")


def test_the_incident_register_shows_what_the_library_registered(
    page: Page, running: RunningConsole, console_home: ConsoleHome, shots: Path
) -> None:
    records = console_home.records
    with console_home.open("officer2") as v:
        found = v.incident_open("leak", v.now() - timedelta(hours=2))
        v.incident_add_records(found.id, records[:2])
        notified = v.incident_notify(found.id, "guardians")
    page.goto(running.base + "/")
    page.click("nav a[href='/incidents']")
    assert page.locator("h1").inner_text() == "安全事件登记"
    cells = page.locator(f"#incident-{found.id} td")
    assert cells.nth(0).inner_text() == found.id
    # Beijing time, to the minute, as every time in the console.
    discovered = found.discovered.astimezone(timezone(timedelta(hours=8)))
    assert cells.nth(1).inner_text() == discovered.strftime("%Y-%m-%d %H:%M")
    assert cells.nth(2).inner_text() == "泄露"
    assert cells.nth(3).locator("code").all_inner_texts() == records[:2]
    assert cells.nth(4).inner_text().startswith("监护人")
    assert "主管部门" not in cells.nth(4).inner_text()
    assert cells.nth(5).inner_text() == "未结"
    assert cells.nth(6).inner_text() == "officer2"
    assert set(notified.notified) == {"guardians"}
    page.screenshot(path=str(shots / "console-incidents.png"), full_page=True)


def test_library_errors_show_their_message_and_status(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    missing = page.goto(running.base + "/requests/" + "0" * 32)
    assert missing is not None and missing.status == 404
    # In the session's language (issue 16: library errors on the page read in zh_CN).
    assert "没有申请" in page.locator("#error-message").inner_text()
    # Deciding an already decided request: a usage error (400), nothing changes.
    rid = console_home.requests["deny"]
    page.goto(f"{running.base}/requests/{rid}")
    csrf = page.locator("input[name=csrf]").first.input_value()
    again = page.request.post(
        f"{running.base}/requests/{rid}/approve",
        form={"ttl_minutes": "60", "uses": "1", "csrf": csrf},
        headers={"origin": running.base},
    )
    assert again.status == 400
    assert "已是 denied 状态" in again.text()
    assert _request(console_home, rid).status == "denied"


def test_odd_form_bodies_are_refused(
    page: Page, running: RunningConsole, console_home: ConsoleHome
) -> None:
    rid = console_home.requests["forged"]
    page.goto(f"{running.base}/requests/{rid}")
    csrf = page.locator("input[name=csrf]").first.input_value()
    url = f"{running.base}/requests/{rid}/deny"
    crowded = page.request.post(
        url, form={"csrf": csrf, "reason": "x", **{f"f{i}": "x" for i in range(30)}}
    )
    assert crowded.status == 400
    huge = page.request.post(url, form={"csrf": csrf, "reason": "x" * (128 * 1024)})
    assert huge.status == 413
    assert _request(console_home, rid).status == "pending"


def test_logging_out_ends_the_session(page: Page, running: RunningConsole) -> None:
    page.goto(running.base + "/")
    page.click("header form[action='/logout'] button")
    assert page.locator("h1").inner_text() == "已退出登录"
    after = page.goto(running.base + "/")
    assert after is not None and after.status == 401


def test_the_console_stops_cleanly(running: RunningConsole) -> None:
    err = stop_console(running.proc)
    assert running.proc.returncode == 0
    assert "stopped" in err
    assert "Traceback" not in err
    # Nothing on stderr repeats the login token.
    assert running.login_url.split("token=", 1)[1] not in err


def _error(page: Page) -> str:
    """The console's error message on the page, for assertion messages."""
    shown = page.locator("#error-message")
    return shown.inner_text() if shown.count() else page.url
