"""The console's error pages read in the session's language (issue 16).

A library error (a request that does not exist) and the console's own refusals
(a form body that is not UTF-8, too many fields) reach the officer's page: in
Chinese for a Chinese session (the console's default), and with the very same
English text as before once the officer switches to English. Plain HTTP against
a real ``childvault console`` process (tests/console has the fixtures).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from childvault.keys import Identity
from tests.console.conftest import (
    ConsoleHome,
    RunningConsole,
    build_console_home,
    start_console,
    stop_console,
)

MISSING = "0" * 32
FORM = {"content-type": "application/x-www-form-urlencoded"}


@pytest.fixture(scope="module")
def console(
    template: tuple[Path, dict[str, Identity]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleHome, RunningConsole]]:
    home = build_console_home(template, tmp_path_factory.mktemp("console-errors"))
    running = start_console(home.home, "officer1")
    try:
        yield home, running
    finally:
        stop_console(running.proc)


def _error(response: requests.Response) -> str:
    found = re.search(r'id="error-message">(.*?)</p>', response.text, re.S)
    assert found, response.text[:500]
    return found.group(1)


def _csrf(session: requests.Session, url: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', session.get(url, timeout=60).text)
    assert found
    return found.group(1)


def test_error_pages_read_in_chinese_then_in_english(
    console: tuple[ConsoleHome, RunningConsole],
) -> None:
    home, running = console
    browser = requests.Session()
    assert browser.get(running.login_url, timeout=60).status_code == 200
    rid = home.requests["forged"]
    deny = f"{running.base}/requests/{rid}/deny"

    missing = browser.get(f"{running.base}/requests/{MISSING}", timeout=60)
    assert missing.status_code == 404
    assert _error(missing) == f"没有申请 {MISSING}"
    not_utf8 = browser.post(deny, data=b"reason=\xff\xfe", headers=FORM, timeout=60)
    assert not_utf8.status_code == 400
    assert _error(not_utf8) == "表单数据不是 UTF-8 编码"
    crowded = browser.post(deny, data={f"f{i}": "x" for i in range(30)}, timeout=60)
    assert crowded.status_code == 400
    assert _error(crowded) == "表单字段过多"

    # The officer switches to English: the same errors, in the same English as before.
    switched = browser.post(
        f"{running.base}/lang",
        data={"lang": "en", "csrf": _csrf(browser, running.base + "/"), "next": "/"},
        timeout=60,
    )
    assert switched.status_code == 200
    missing = browser.get(f"{running.base}/requests/{MISSING}", timeout=60)
    assert _error(missing) == f"no request {MISSING}"
    not_utf8 = browser.post(deny, data=b"reason=\xff\xfe", headers=FORM, timeout=60)
    assert _error(not_utf8) == "form data is not UTF-8"
    crowded = browser.post(deny, data={f"f{i}": "x" for i in range(30)}, timeout=60)
    assert _error(crowded) == "too many form fields"
