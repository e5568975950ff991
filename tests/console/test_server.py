"""``childvault --server URL console``: the officers' console against a real ``childvault serve``.

The vault is served by a ``childvault serve`` process (tests/server/_vaultserver.py);
the officer's workstation holds only the identity file, as for every other
command in server mode. The console runs as a real subprocess and is clicked
through in Debian's chromium; what it decided is checked through the server
with the library, as other people would see it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from childvault.vault import NewRecordInput
from tests.conftest import TODAY, child_values, consent
from tests.console.conftest import LAUNCHER, RunningConsole, start_console, stop_console
from tests.server._vaultserver import CLI_TIMEOUT, VaultServer, make_vault, passphrase

CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Served:
    """The served vault, the records and the request the console decides."""

    vault: VaultServer
    records: list[str]
    request: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    vs = make_vault(tmp_path_factory.mktemp("console-server"))
    vs.start()
    try:
        with vs.connect("worker1") as v:
            records = v.add_records(
                [
                    NewRecordInput(
                        "child",
                        child_values(i, today=TODAY),
                        consent(("case_management",), today=TODAY),
                    )
                    for i in range(2)
                ]
            )
            rid = v.request_access(
                records, ["name", "guardian_phone"], "case_management", "远程核对联系方式"
            )
        yield Served(vs, records, rid)
    finally:
        vs.stop()


@pytest.fixture(scope="module")
def running(served: Served) -> Iterator[RunningConsole]:
    # The workstation holds no vault: only officer1's identity file.
    workstation = served.vault.workstation("officer1")
    assert not (workstation / "config.json").exists()
    started = start_console(
        workstation,
        "officer1",
        passphrase=passphrase("officer1"),
        env_extra={"CHILDVAULT_SERVER": served.vault.url},
    )
    yield started
    stop_console(started.proc)


@pytest.fixture(scope="module")
def page(browser: Any, running: RunningConsole) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, locale="zh-CN")
    tab = context.new_page()
    yield tab
    context.close()


def test_the_global_server_option_reaches_the_console(served: Served) -> None:
    # worker1's workstation is no vault home: the console can only learn that
    # worker1 is staff by asking the server (without --server it would fail
    # with "not a childvault home").
    env = dict(os.environ, CHILDVAULT_PASSPHRASE=passphrase("worker1"))
    for name in ("CHILDVAULT_HOME", "CHILDVAULT_USER", "CHILDVAULT_SERVER"):
        env.pop(name, None)
    ws = served.vault.workstation("worker1")
    args = ["--server", served.vault.url, "--home", str(ws), "--as", "worker1", "console"]
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "worker1 is not an officer" in done.stderr
    assert done.stdout == ""


def test_the_console_logs_in_and_lists_the_servers_queue(
    page: Any, running: RunningConsole, served: Served
) -> None:
    response = page.goto(running.login_url)
    assert response is not None and response.ok
    assert page.url == running.base + "/"
    assert response.headers["content-security-policy"] == CSP
    assert running.base.startswith("http://127.0.0.1:")
    row = page.locator(f"#req-{served.request}")
    assert row.count() == 1
    assert "远程核对联系方式" in row.inner_text() and "worker1" in row.inner_text()


def test_approving_through_the_console_grants_on_the_server(
    page: Any, running: RunningConsole, served: Served
) -> None:
    page.goto(f"{running.base}/requests/{served.request}")
    # The record pages come from the server too: each record's bookkeeping is shown.
    for record_id in served.records:
        assert "child" in page.locator(f"#rec-{record_id}").inner_text()
    page.fill("input[name=ttl_minutes]", "30")
    page.fill("input[name=uses]", "1")
    page.click("#approve")
    assert page.locator("h1").inner_text() == "已批准", page.content()
    token = page.locator("#token").input_value()
    grant_id = page.locator("#grant-id").inner_text()

    # Another officer, through the server: the request is approved by officer1 and
    # the grant is in the server's log.
    with served.vault.connect("officer2") as v:
        req = next(r for r in v.requests(None) if r.id == served.request)
        assert (req.status, req.decided_by) == ("approved", "officer1")
        approvals = [
            item["entry"]
            for item in v.audit_entries()
            if item["entry"].get("action") == "request.approve"
        ]
        assert [(e.get("grant"), e.get("outcome")) for e in approvals] == [(grant_id, "ok")]
    # And the requester can use the token through the server.
    with served.vault.connect("worker1") as v:
        values = v.read_with_grant(token)
    assert set(values) == set(served.records)
    assert all(set(fields) == {"name", "guardian_phone"} for fields in values.values())


def test_the_rights_register_comes_from_the_server(
    page: Any, running: RunningConsole, served: Served
) -> None:
    with served.vault.connect("officer2") as v:
        opened = v.rights_open(
            "delete", served.records[0], requester="guardian", received=TODAY, identity_checked=True
        )
    page.goto(running.base + "/rights")
    cells = page.locator(f"#rights-{opened.id} td")
    assert cells.nth(0).inner_text() == opened.id
    assert cells.nth(2).inner_text() == "删除"
    assert cells.nth(4).inner_text() == served.records[0]


def test_a_forged_post_is_refused_against_the_server_too(
    page: Any, running: RunningConsole, served: Served
) -> None:
    grants = page.goto(running.base + "/grants")
    assert grants is not None and grants.status == 200
    row_id = page.locator("tr[id^=grant-]").first.get_attribute("id")
    assert row_id is not None
    gid = row_id.removeprefix("grant-")
    forged = page.request.post(f"{running.base}/grants/{gid}/revoke", form={})
    assert forged.status == 403
    with served.vault.connect("officer2") as v:
        revokes = [
            item for item in v.audit_entries() if item["entry"].get("action") == "grant.revoke"
        ]
    assert revokes == []


def test_the_console_against_the_server_stops_cleanly(running: RunningConsole) -> None:
    err = stop_console(running.proc)
    assert running.proc.returncode == 0, err
    assert "Traceback" not in err
