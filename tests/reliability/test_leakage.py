"""Leakage: after a scripted session with marker values (real CLI processes and
the library) that imports, is refused, looks up, requests, approves, reads,
corrects, deletes, exports, reports, rotates and verifies, no marker appears
anywhere but in the deliberate outputs of ``read`` and of the subject report.

Scanned: every file under the home, the witness, the temporary directory
(TMPDIR of every process), every file the commands wrote, stdout and stderr of
every command, every exception message, the log (``audit log --json`` and the
raw table) and every table cell. Markers are searched as UTF-8, as JSON
``\\u`` escapes and (Vault mode, where the server's audit device is scanned
too) as base64.

A scanner that finds nothing proves nothing: each test first checks that the
markers are found in the deliberate outputs.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from childvault.keys import ChildVaultError, Identity
from childvault.vault._time import system_clock
from tests._insider import Insider
from tests.conftest import ROLES, World, build_template, copy_world
from tests.integration.conftest import BaoServer
from tests.reliability._support import record_result, run_cli
from tests.test_records import CJK_MARK, LATIN_MARK, marked_rows, write_csv

CORRECTION = "ZQXCORRECTED-改正"
BAD_MARK = "ZQXBADVALUE"


def _needles(rows: list[dict[str, str]]) -> list[str]:
    values = [LATIN_MARK, CJK_MARK, CORRECTION, BAD_MARK]
    for row in rows:
        values += [row["id_number"], row["guardian_phone"], row["name"]]
    return values


def _forms(needle: str, *, with_base64: bool = False) -> list[bytes]:
    forms = [needle.encode("utf-8"), json.dumps(needle)[1:-1].encode("ascii")]
    if with_base64:
        raw = needle.encode("utf-8")
        forms += [base64.b64encode(raw), base64.urlsafe_b64encode(raw).rstrip(b"=")]
    return [f for f in dict.fromkeys(forms) if len(f) >= 6]


class Scanner:
    """Collects everything that must not hold a marker, then searches it."""

    def __init__(self, needles: list[str], *, with_base64: bool = False) -> None:
        self.forms = {n: _forms(n, with_base64=with_base64) for n in needles}
        self.places: list[tuple[str, bytes]] = []

    def add(self, where: str, data: bytes | str) -> None:
        self.places.append((where, data.encode("utf-8") if isinstance(data, str) else data))

    def add_tree(self, root: Path, *, skip: Iterable[Path] = ()) -> None:
        skipped = {p.resolve() for p in skip}
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.resolve() not in skipped:
                self.add(str(path), path.read_bytes())

    def leaks(self) -> list[str]:
        found = []
        for where, data in self.places:
            for needle, forms in self.forms.items():
                if any(f in data for f in forms):
                    found.append(f"{needle!r} in {where}")
        return found

    @staticmethod
    def contains(data: bytes | str, needle: str) -> bool:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        return any(f in raw for f in _forms(needle))


def _db_cells(world: World) -> Iterator[tuple[str, bytes]]:
    with Insider(world, "worker1") as insider:
        for table in insider.tables():
            for row in insider.rows(table):
                for cell in row:
                    yield table, cell if isinstance(cell, bytes) else str(cell).encode()


def test_no_marker_leaves_the_deliberate_outputs_local(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path
) -> None:
    rows = marked_rows(30)
    world = copy_world(*template, tmp_path / "w", clock=system_clock)
    inputs, outputs, tmpdir = tmp_path / "in", tmp_path / "out", tmp_path / "tmpdir"
    for d in (inputs, outputs, tmpdir):
        d.mkdir()
    src = write_csv(inputs / "children.csv", rows)
    bad = [dict(r) for r in marked_rows(3)]
    bad[0]["guardian_phone"] = f"{BAD_MARK}-phone"
    bad[1]["id_number"] = f"{BAD_MARK}123"
    bad[2]["sex"] = f"{BAD_MARK}-sex"
    bad_src = write_csv(inputs / "bad.csv", bad)
    scan = Scanner(_needles(rows))
    deliberate: dict[str, str] = {}
    commands = 0

    def cli(user: str, *args: str, expect: int = 0, deliberate_as: str | None = None) -> str:
        nonlocal commands
        commands += 1
        done = run_cli(world.home, user, *args, TMPDIR=str(tmpdir))
        assert done.returncode == expect, (args, done.stdout, done.stderr)
        scan.add(f"stderr of {args[:2]}", done.stderr)
        if deliberate_as:
            deliberate[deliberate_as] = done.stdout
        else:
            scan.add(f"stdout of {args[:2]}", done.stdout)
        return done.stdout

    cli("worker1", "--json", "import", str(src))
    cli("worker1", "--json", "import", str(bad_src), expect=1)
    ids = [r["id"] for r in json.loads(cli("worker1", "--json", "list"))["records"]]
    with world.open("worker1") as v:
        by_row = {r.id: r for r in v.list_records()}
    assert len(by_row) == 30
    cli("worker1", "find", "--field", f"id_number={rows[0]['id_number']}")
    req = json.loads(
        cli(
            "worker1",
            "--json",
            "request",
            *[a for i in ids[:4] for a in ("--record", i)],
            "--field",
            "name",
            "--field",
            "case_notes",
            "--field",
            "guardian_phone",
            "--purpose",
            "case_management",
            "--reason",
            "家访前核对",
        )
    )["request_id"]
    token_file = outputs / "grant.token"
    cli("officer1", "approve", req, "--uses", "2", "--out", str(token_file))
    cli("worker1", "read", *ids[:2], "--grant", f"@{token_file}", deliberate_as="read")
    cli("worker1", "--json", "read", ids[2], "--grant", f"@{token_file}", deliberate_as="read2")
    cli("worker1", "read", ids[3], "--grant", f"@{token_file}", expect=3)
    cli("officer1", "correct", ids[4], "--field", f"case_notes={CORRECTION}")
    cli("officer1", "delete", ids[5], "--reason", "监护人要求删除")
    cli("officer1", "--json", "export", "anonymized", "--out", str(outputs / "export.csv"))
    req2 = json.loads(
        cli(
            "worker1",
            "--json",
            "request",
            "--record",
            ids[0],
            "--field",
            "name",
            "--field",
            "address",
            "--purpose",
            "case_management",
            "--reason",
            "查阅报告",
        )
    )["request_id"]
    cli("officer1", "approve", req2, "--out", str(outputs / "grant2.token"))
    subject = outputs / "subject.json"
    cli(
        "worker1",
        "report",
        "subject",
        ids[0],
        "--grant",
        f"@{outputs / 'grant2.token'}",
        "--out",
        str(subject),
    )
    cli("officer1", "report", "incident", "--actor", "worker1", "--since", "-1d")
    cli("officer1", "--json", "audit", "log")
    cli("officer1", "audit", "checkpoint")
    cli("officer1", "keys", "rotate")
    cli("admin", "retention", "sweep", "--dry-run")
    cli("worker1", "audit", "verify")
    cli("worker1", "doctor")
    cli("officer1", "--json", "requests", "--all")

    # Library: refusals whose messages must not echo what was refused.
    from tests.conftest import consent

    messages = []
    with world.open("worker1") as v:
        for call in (
            lambda: v.add_record("child", {**rows[0], "guardian_phone": BAD_MARK}, consent()),
            lambda: v.add_record("child", {**rows[0], "religion": BAD_MARK}, consent()),
            lambda: v.read_with_grant(token_file.read_text().strip()),
            lambda: v.find("id_number", f"{BAD_MARK}1"),
            lambda: v.request_access(ids[:1], ["name"], "case_management", ""),
        ):
            try:
                call()
            except ChildVaultError as exc:
                messages.append(f"{type(exc).__name__}: {exc} / {exc.detail}")
    with world.open("officer1") as v:
        for call in (
            lambda: v.correct(ids[6], "guardian_phone", f"{BAD_MARK}9"),
            lambda: v.correct(ids[6], "sex", CJK_MARK),
        ):
            try:
                call()
            except ChildVaultError as exc:
                messages.append(f"{type(exc).__name__}: {exc} / {exc.detail}")
    assert len(messages) == 7, messages
    for message in messages:
        scan.add("exception message", message)

    # The scanner works: the deliberate outputs hold the values.
    assert Scanner.contains(deliberate["read"], LATIN_MARK)
    assert Scanner.contains(deliberate["read"], CJK_MARK)
    assert Scanner.contains(deliberate["read2"], LATIN_MARK)
    assert Scanner.contains(subject.read_bytes(), CJK_MARK)

    scan.add_tree(world.home.parent)  # the home, and the witness beside it
    scan.add_tree(tmpdir)
    scan.add_tree(outputs, skip=[subject])
    for table, cell in _db_cells(world):
        scan.add(f"table {table}", cell)
    leaks = scan.leaks()
    assert not leaks, leaks
    # What is not encrypted is at least private to the vault's Unix user.
    assert world.home.stat().st_mode & 0o777 == 0o700
    for path in world.home.rglob("*"):
        expected = 0o700 if path.is_dir() else 0o600
        assert path.stat().st_mode & 0o777 == expected, path
    for path in (token_file, outputs / "export.csv", subject):
        assert path.stat().st_mode & 0o777 == 0o600, path
    record_result(
        "test_no_marker_leaves_the_deliberate_outputs_local",
        cli_commands=commands,
        library_refusals=len(messages),
        places_scanned=len(scan.places),
        needles=len(scan.forms),
    )


# -------------------------------------------------------------- Vault mode


@pytest.fixture
def audited_bao(bao_binary: str, tmp_path: Path) -> Iterator[tuple[BaoServer, Path]]:
    audit_log = tmp_path / "bao-audit.log"
    server = BaoServer(
        bao_binary,
        tmp_path,
        config_hcl=f'audit "file" "to-file" {{\n  options {{\n    file_path = "{audit_log}"\n'
        "  }\n}\n",
    )
    server.start()
    try:
        server.setup(audit_file=str(audit_log))
        yield server, audit_log
    finally:
        server.close()


@pytest.mark.vault
def test_no_marker_in_the_vault_audit_device_or_the_home(
    audited_bao: tuple[BaoServer, Path], tmp_path: Path
) -> None:
    """Vault mode: the same kinds of operations; the server's own audit device
    (which HMACs request and response values) is scanned as well, including
    for base64 forms: blind-index lookups send identity numbers to Transit."""
    server, audit_log = audited_bao
    policy = {
        "staff": "childvault-staff",
        "officer": "childvault-officer",
        "admin": "childvault-admin",
    }
    home = tmp_path / "vt" / "home"
    ids_ = build_template(
        home, provider="vault", vault_settings=json.loads(server.settings.to_json())
    )
    roles = {"admin": "admin", **{name: r[0] for name, r in ROLES.items()}}
    tokens = {n: server.token([policy[r]], ttl="1h") for n, r in roles.items()}
    world = World(home, ids_, clock=system_clock, tokens=tokens, provider="vault")
    rows = marked_rows(12)
    inputs = tmp_path / "in"
    inputs.mkdir()
    src = write_csv(inputs / "children.csv", rows)
    scan = Scanner(_needles(rows), with_base64=True)
    done = run_cli(
        world.home, "worker1", "--json", "import", str(src), VAULT_TOKEN=tokens["worker1"]
    )
    assert done.returncode == 0, done.stderr
    scan.add("import stdout", done.stdout)
    scan.add("import stderr", done.stderr)
    with world.open("worker1") as v:
        ids = [r.id for r in v.list_records()]
        assert v.find("id_number", rows[0]["id_number"])
        req = v.request_access(ids[:3], ["name", "case_notes", "id_number"], "case_management", "x")
    with world.open("officer1") as v:
        token = v.approve(req, uses=2).token
        v.correct(ids[4], "case_notes", CORRECTION)
        v.delete(ids[5], "监护人要求删除")
        v.checkpoint()
    with world.open("worker1") as v:
        values = v.read_with_grant(token)
        again = v.read_with_grant(token)  # second use: from the grant cache
    assert values == again
    assert Scanner.contains(json.dumps(values, ensure_ascii=False), LATIN_MARK)
    with world.open("admin") as v:
        v.retention_sweep(dry_run=True)
        v.verify_audit()
    audit_text = audit_log.read_bytes()
    assert b"transit" in audit_text and b"sys/wrapping/unwrap" in audit_text
    scan.add("the OpenBao audit device", audit_text)
    scan.add_tree(world.home.parent)  # the home, and the witness beside it
    for table, cell in _db_cells(world):
        scan.add(f"table {table}", cell)
    leaks = scan.leaks()
    assert not leaks, leaks
    record_result(
        "test_no_marker_in_the_vault_audit_device_or_the_home",
        audit_device_bytes=len(audit_text),
        places_scanned=len(scan.places),
        needles=len(scan.forms),
    )
