"""Hostile input: witness files and checkpoints, import files (huge cells, NUL
bytes, invalid UTF-8, formula prefixes, 10,000 columns), schema files, and
arbitrary command lines; and the anonymised export against spreadsheet
formula injection.

Every rejection must be one of the library's own errors (``ChildVaultError``
subclasses, or a click usage error with exit 2), in bounded memory and time,
and must write nothing (data tables and log unchanged; refusals that are
access decisions may append a ``denied`` entry, by design).

Token hostility is covered in tests/test_approvals.py and, coverage-guided,
by the atheris targets in tests/reliability/fuzz_targets.py (test_fuzz.py).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from childvault.cli._context import Ctx
from childvault.cli.main import cli
from childvault.keys import ChildVaultError, Identity, ImportFailed, IntegrityError
from childvault.vault import NewRecordInput, Vault, _audit
from childvault.vault._reports import neutralise_cell
from tests.conftest import (
    PASSPHRASES,
    TODAY,
    World,
    add_children,
    child_values,
    consent,
    copy_world,
    lower_export_k,
)
from tests.reliability._support import (
    DATA_TABLES,
    ROOT,
    deadline,
    record_result,
    table_digests,
)
from tests.test_records import CONSENT_COLS

HOSTILE = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def hostile_world(
    template: tuple[Path, dict[str, Identity]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    """A world with records, an approval (so a witnessed checkpoint) and a checkpoint."""
    world = copy_world(*template, tmp_path_factory.mktemp("hostile"))
    with world.open("worker1") as v:
        ids = add_children(v, 5)
        req = v.request_access(ids[:2], ["name"], "case_management", "证人")
    with world.open("officer1") as v:
        v.approve(req)
        v.checkpoint()
    yield world


# ------------------------------------------------------------ witness files


def _mutate(data: bytes, draw: Any) -> bytes:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate"]))
        if not out:
            break
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del out[at:]
        else:
            out.extend(out[: at + 1])
    return bytes(out)


def test_hostile_witness_files_give_integrity_error_or_verify(hostile_world: World) -> None:
    """Random bytes, mutated genuine witness files, junk JSON lines and deeply
    nested lines: ``audit verify`` passes (only if every note it read is a
    genuine checkpoint) or raises IntegrityError. Verification writes nothing."""
    witness = hostile_world.witness
    genuine = witness.read_bytes()
    genuine_notes = set(_audit.read_witness(witness))
    before = table_digests(hostile_world, (*DATA_TABLES, "audit", "checkpoints"))
    seen = {"verified": 0, "IntegrityError": 0}

    @HOSTILE
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        choice = data.draw(st.sampled_from(["bytes", "mutated", "lines", "nested"]))
        if choice == "bytes":
            content = data.draw(st.binary(max_size=3000))
        elif choice == "mutated":
            content = _mutate(genuine, data.draw)
        elif choice == "lines":
            junk = st.one_of(
                st.text(max_size=200).map(lambda t: json.dumps({"note": t})),
                st.text(max_size=200).map(json.dumps),
                st.sampled_from(['{"note": 1}', "{}", "[]", "null", '{"note": null}']),
            )
            lines = data.draw(st.lists(junk, max_size=5))
            content = genuine + "\n".join(lines).encode("utf-8", "surrogatepass")
        else:
            depth = data.draw(st.integers(500, 200_000))
            content = genuine + b"[" * depth + b"\n"
        witness.write_bytes(content)
        try:
            with deadline(60, "verify with a hostile witness"):
                v.verify_audit()
        except IntegrityError:
            seen["IntegrityError"] += 1
            return
        assert set(_audit.read_witness(witness)) <= genuine_notes
        seen["verified"] += 1

    with hostile_world.open("admin") as v:
        try:
            check()
        finally:
            witness.write_bytes(genuine)
        v.verify_audit()
    assert table_digests(hostile_world, (*DATA_TABLES, "audit", "checkpoints")) == before
    record_result("test_hostile_witness_files_give_integrity_error_or_verify", **seen)


_READ_WITNESS = (
    "import resource, sys\n"
    "from pathlib import Path\n"
    "resource.setrlimit(resource.RLIMIT_AS, (1 << 31, 1 << 31))\n"
    "from childvault.keys import IntegrityError\n"
    "from childvault.vault._audit import read_witness\n"
    "try:\n"
    "    read_witness(Path(sys.argv[1]))\n"
    "    print('read')\n"
    "except IntegrityError as exc:\n"
    "    print('IntegrityError', exc)\n"
)


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full", "fifo"])
def test_regression_witness_on_a_device_was_read_without_end(device: str, tmp_path: Path) -> None:
    """Bug: ``read_witness`` read the whole file into memory, so a witness path
    naming a device (``/dev/zero``, ``/dev/full``) grew memory without end (it
    took 24 GB before the kernel killed the test run) and a FIFO hung. Since the
    approval now verifies the witness before signing, a misconfigured witness
    took the machine down. Now: IntegrityError, at once, in bounded memory."""
    path = device
    if device == "fifo":
        path = str(tmp_path / "witness.fifo")
        import os

        os.mkfifo(path)
    elif not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    done = subprocess.run(
        [sys.executable, "-c", _READ_WITNESS, path],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("IntegrityError") and "not a regular file" in done.stdout


def test_regression_deeply_nested_witness_line_raised_recursion_error(tmp_path: Path) -> None:
    """Bug: a witness line of deeply nested JSON made ``json.loads`` raise
    RecursionError, which escaped ``read_witness`` (an internal error)."""
    path = tmp_path / "w.jsonl"
    path.write_bytes(b"[" * 200_000 + b"\n")
    with pytest.raises(IntegrityError, match="line 1 is damaged"):
        _audit.read_witness(path)


def test_witness_with_a_gigantic_line_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "w.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"note": "')
        for _ in range(40):
            fh.write(b"A" * (1 << 20))  # 40 MiB on one line
    tracemalloc.start()
    try:
        with (
            deadline(60, "reading a witness with a 40 MiB line"),
            pytest.raises(IntegrityError, match="damaged"),
        ):
            _audit.read_witness(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak {peak} bytes"


# ------------------------------------------------------------- import files

CELLS = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(["=1+1", "+cmd", "-2", "@SUM(A1)", '=HYPERLINK("http://x")', "\t=1"]),
    st.text(max_size=10).map(lambda t: t + "\x00" + t),
    st.integers(0, 9000).map(lambda n: "长" * n),
)
COLUMNS = st.sampled_from(
    [*child_values(0), *CONSENT_COLS, "religion", "=evil", "", " name", "名字", "photo"]
)


def _csv_bytes(rows: list[dict[str, str]], header: list[str]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(h, "") for h in header])
    return buf.getvalue().encode("utf-8", "surrogatepass")


def _row(draw: Any, i: int) -> dict[str, str]:
    base = {**child_values(i), **CONSENT_COLS}
    for column in draw(st.lists(COLUMNS, max_size=4)):
        base[column] = draw(CELLS)
    for column in draw(st.lists(st.sampled_from(sorted(base)), max_size=2)):
        base.pop(column, None)
    return base


def test_hostile_import_rows_only_library_errors_and_nothing_written_on_rejection(
    hostile_world: World, tmp_path: Path
) -> None:
    counts = {"imported": 0, "rejected": 0}

    @HOSTILE
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        n = data.draw(st.integers(0, 4))
        rows = [_row(data.draw, i) for i in range(n)]
        fmt = data.draw(st.sampled_from(["csv", "jsonl", "raw-csv", "raw-jsonl"]))
        path = tmp_path / f"rows.{'jsonl' if fmt.endswith('jsonl') else 'csv'}"
        if fmt == "csv":
            header = sorted({k for r in rows for k in r}) or ["name"]
            path.write_bytes(_csv_bytes(rows, header))
        elif fmt == "jsonl":
            path.write_bytes(
                b"\n".join(
                    json.dumps(r, ensure_ascii=False).encode("utf-8", "surrogatepass") for r in rows
                )
            )
        else:
            path.write_bytes(data.draw(st.binary(max_size=2000)))
        skip = data.draw(st.booleans())
        before = table_digests(hostile_world, (*DATA_TABLES, "audit"))
        try:
            with deadline(60, "a hostile import"):
                v.import_file(path, skip_invalid=skip)
            counts["imported"] += 1
        except ChildVaultError:
            counts["rejected"] += 1
            assert table_digests(hostile_world, (*DATA_TABLES, "audit")) == before

    with hostile_world.open("worker1") as v:
        check()
    record_result(
        "test_hostile_import_rows_only_library_errors_and_nothing_written_on_rejection", **counts
    )


def _valid_csv_row(i: int) -> dict[str, str]:
    return {**child_values(i), **CONSENT_COLS}


@pytest.mark.parametrize(
    "case",
    [
        "10000-columns-csv",
        "10000-keys-jsonl",
        "6MiB-cell-csv",
        "6MiB-line-jsonl",
        "nul-byte-csv",
        "invalid-utf8-csv",
        "invalid-utf8-jsonl",
    ],
)
def test_pathological_import_files_are_refused_in_bounded_memory(
    case: str, hostile_world: World, tmp_path: Path
) -> None:
    good = [_valid_csv_row(i) for i in range(3)]
    header = list(good[0])
    path = tmp_path / ("f.jsonl" if case.endswith("jsonl") else "f.csv")
    if case == "10000-columns-csv":
        path.write_bytes(_csv_bytes(good, header + [f"c{i}" for i in range(10_000)]))
    elif case == "10000-keys-jsonl":
        path.write_text(json.dumps({**good[0], **{f"c{i}": "x" for i in range(10_000)}}) + "\n")
    elif case == "6MiB-cell-csv":
        good[1]["case_notes"] = "记" * (2 << 20)  # 6 MiB of UTF-8
        path.write_bytes(_csv_bytes(good, header))
    elif case == "6MiB-line-jsonl":
        good[1]["case_notes"] = "x" * (6 << 20)
        path.write_text("\n".join(json.dumps(r) for r in good) + "\n")
    elif case == "nul-byte-csv":
        good[1]["name"] = "张\x00三"
        path.write_bytes(_csv_bytes(good, header))
    elif case == "invalid-utf8-csv":
        path.write_bytes(_csv_bytes(good, header).replace("测试儿童1".encode(), b"\xff\xfe\xc3"))
    elif case == "invalid-utf8-jsonl":
        lines = [json.dumps(r, ensure_ascii=False).encode() for r in good]
        lines[1] = lines[1].replace("测试儿童1".encode(), b"\xff\xfe")
        path.write_bytes(b"\n".join(lines) + b"\n")
    before = table_digests(hostile_world, (*DATA_TABLES, "audit"))
    tracemalloc.start()
    try:
        with (
            deadline(120, f"importing {case}"),
            hostile_world.open("worker1") as v,
            pytest.raises(ImportFailed) as info,
        ):
            v.import_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "\x00" not in str(info.value) and "记记记" not in str(info.value)
    assert table_digests(hostile_world, (*DATA_TABLES, "audit")) == before
    assert peak < 96 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize("bad_row", [0, 2, 60])
def test_regression_invalid_utf8_in_first_8_kib_was_blamed_on_the_header(
    bad_row: int, hostile_world: World, tmp_path: Path
) -> None:
    """Bug: the text decoder reads ahead 8 KiB, so a bad byte in any early row
    was reported as "the header row is not valid UTF-8 CSV" and a later one
    against the wrong row. The error now names the line of the bad byte."""
    good = [_valid_csv_row(i) for i in range(80)]
    header = list(good[0])
    marker = f"测试儿童{bad_row},".encode()
    data = _csv_bytes(good, header)
    assert data.count(marker) == 1
    path = tmp_path / "bad.csv"
    path.write_bytes(data.replace(marker, b"\xff\xfe,"))
    line = data.split(b"\n").index(next(x for x in data.split(b"\n") if marker in x)) + 1
    before = table_digests(hostile_world, (*DATA_TABLES, "audit"))
    with hostile_world.open("worker1") as v, pytest.raises(ImportFailed) as info:
        v.import_file(path)
    assert f"line {line} of the file is not valid UTF-8" in str(info.value)
    assert "header" not in str(info.value)
    assert table_digests(hostile_world, (*DATA_TABLES, "audit")) == before


def test_regression_deeply_nested_jsonl_line_raised_recursion_error(
    hostile_world: World, tmp_path: Path
) -> None:
    """Bug: a JSON Lines row of deeply nested arrays made ``json.loads`` raise
    RecursionError, which escaped the importer as an internal error (exit 1,
    "internal error") instead of a bad row reported by ImportFailed."""
    path = tmp_path / "nested.jsonl"
    path.write_text(json.dumps(_valid_csv_row(0)) + "\n" + "[" * 100_000 + "\n")
    before = table_digests(hostile_world, (*DATA_TABLES, "audit"))
    with hostile_world.open("worker1") as v, pytest.raises(ImportFailed, match="row 2"):
        v.import_file(path)
    assert table_digests(hostile_world, (*DATA_TABLES, "audit")) == before


# -------------------------------------------------------- formula injection


@given(st.text(max_size=50))
def test_neutralised_cells_never_start_a_formula(text: str) -> None:
    out = neutralise_cell(text)
    assert not out.startswith(FORMULA_PREFIXES)
    assert out in (text, "'" + text)


REGION_SCHEMA = """
[types.child.fields.region]
description = "片区 / Service area"
type = "text"
sensitivity = "low"
identifier = "none"
max_length = 100
"""


def test_export_end_to_end_neutralises_formula_prefixes(tmp_path: Path) -> None:
    """A schema with a text field exported as is (``identifier = "none"``);
    values starting with = + - @ are imported as text and come out of the
    anonymised CSV export with a leading apostrophe."""
    if not hasattr(Vault, "export_anonymized"):
        pytest.skip("Vault.export_anonymized does not exist yet")
    schema = tmp_path / "schema.toml"
    source = (ROOT / "childvault" / "vault" / "schemas" / "child.toml").read_text(encoding="utf-8")
    schema.write_text(source + REGION_SCHEMA, encoding="utf-8")
    home = tmp_path / "home"
    with Vault.init(
        home,
        institution="测试",
        admin="admin",
        admin_passphrase=PASSPHRASES["admin"],
        schema=schema,
    ) as v:
        v.add_user("officer1", ["officer", "staff"], PASSPHRASES["officer1"])
    officer = Identity.load(home / "identities" / "officer1.id", PASSPHRASES["officer1"])
    hostile = ['=HYPERLINK("http://x","y")', "+1+cmd", "-2+3", "@SUM(A1)", "=cmd|' /C calc'!A0"]
    with Vault.open(home, identity=officer) as v:
        items = [
            NewRecordInput(
                "child",
                {**child_values(0, today=TODAY, name=f"=姓名{n}"), "region": value},
                # Issue 15: a consent this old (the vault runs on the real
                # clock) needs the signed form's digest; officer1 confirms it.
                dataclasses.replace(
                    consent(
                        ("case_management", "statistics"),
                        consented_at=date(2026, 1, 1),
                        today=TODAY,
                    ),
                    form_sha256="0" * 64,
                ),
            )
            for value in hostile
            for n in range(3)
        ]
        v.add_records(items)
        out = tmp_path / "export.csv"
        lower_export_k(v)
        v.export_anonymized(out, k=3)
    text = out.read_bytes().decode("utf-8-sig")
    cells = [cell for row in csv.reader(io.StringIO(text)) for cell in row]
    assert not [c for c in cells if c.startswith(FORMULA_PREFIXES)], cells
    for value in hostile:
        assert "'" + value in cells
    assert not [c for c in cells if "姓名" in c]  # direct identifiers never leave


# ----------------------------------------------------------------- schemas


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe\x00junk",
        b"[" * 100_000,
        b"a = " + b"[" * 50_000,
        b"x" * (2 << 20),
        b'name = "child"\nversion = 1\npurposes = ["=cmd"]\n',
        (ROOT / "childvault" / "vault" / "schemas" / "child.toml")
        .read_bytes()
        .replace(b"text", b"tex\x00t"),
    ],
    ids=["binary", "nested", "nested-array", "2MiB", "formula-purpose", "nul"],
)
def test_cli_init_with_a_hostile_schema_exits_2_and_creates_nothing(
    content: bytes, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.toml"
    schema.write_bytes(content)
    passphrase = tmp_path / "pass"
    passphrase.write_text("a-long-passphrase\n")
    home = tmp_path / "home"
    with deadline(60, "init with a hostile schema"):
        result = CliRunner().invoke(
            cli,
            [
                "--home",
                str(home),
                "init",
                "--institution",
                "x",
                "--admin",
                "admin",
                "--schema",
                str(schema),
                "--passphrase-file",
                str(passphrase),
            ],
        )
    assert result.exit_code == 2, result.output
    assert "internal error" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not home.exists() or not any(home.iterdir())
    assert not (tmp_path / "home.witness.jsonl").exists()


# ------------------------------------------------------------ command lines


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if name == "demo":
            continue  # makes its own temporary vault; not an input-handling path
        path = (*prefix, name)
        if isinstance(command, click.Group):
            out.extend(_command_paths(command, path))
        else:
            out.append(path)
    return out


OPTION_WORDS = [
    "--field",
    "--record",
    "--purpose",
    "--reason",
    "--grant",
    "--type",
    "--out",
    "--ttl",
    "--uses",
    "--k",
    "--json",
    "--role",
    "--since",
    "--until",
    "--actor",
    "--format",
    "--skip-invalid",
    "--dry-run",
    "--confirm",
    "--all",
    "--help",
    "-h",
    "--entry",
    "--vkey",
    "--consent-by",
    "--retain-until",
    "--passphrase-file",
    "--schema",
    "--provider",
    "--institution",
    "--admin",
    "--witness",
    "--complete",
    "--verify",
    "--",
    "-",
]
ARGS = st.one_of(
    st.sampled_from(OPTION_WORDS),
    st.text(max_size=40),
    st.text(alphabet="0123456789abcdef", min_size=32, max_size=32),
    st.sampled_from(["name=张三", "id_number=110105201603010011", "=1", "@x", "@-", "1h", "-5"]),
    st.sampled_from(["case_management", "statistics", "officer", "staff", "child", "jsonl"]),
)


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


#: Files that exist in the working directory of every command run (hostile content).
INPUT_FILES = ["in.csv", "in.jsonl", "pass.txt", "token.txt", "schema.toml", "proof.json"]
RELATIVE_PATHS = st.sampled_from([*INPUT_FILES, "out.csv", "new/out.json", "../x", ".", ""])


def _value(param: click.Parameter, ids: list[str], token: str) -> st.SearchStrategy[str]:
    """Plausible-but-hostile values for one parameter of a command."""
    name = param.name or ""
    junk = st.text(max_size=40)
    hexid = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
    if isinstance(param.type, click.Choice):
        return st.one_of(st.sampled_from(list(param.type.choices)), junk)
    if isinstance(param.type, click.Path):
        return RELATIVE_PATHS
    if param.type is click.INT or name in ("uses", "k", "entry"):
        return st.one_of(st.integers(-5, 12).map(str), st.just(str(10**30)), junk)
    if name in ("record", "records", "record_id", "record_ids", "request_id", "grant_id"):
        return st.one_of(st.sampled_from(ids), st.sampled_from(ids), hexid, junk)
    if name in ("fields", "assignment"):
        return st.one_of(
            st.tuples(st.sampled_from([*child_values(0), "photo", "religion", ""]), junk).map(
                lambda t: f"{t[0]}={t[1]}"
            ),
            st.sampled_from(["name", "id_number=110105201603010011", "=x", "name"]),
            junk,
        )
    if name == "grant":
        return st.one_of(
            st.just(token),
            st.sampled_from(["@token.txt", "@-", "@missing", "@"]),
            st.integers(0, len(token) - 1).map(lambda n: token[:n] + "A" + token[n + 1 :]),
            junk,
        )
    if name in ("purpose", "purposes"):
        return st.sampled_from(["case_management", "statistics", "marketing", "", "\x00"])
    if name in ("ttl", "since", "until", "consented_at", "retain_until"):
        return st.one_of(
            st.sampled_from(["1h", "30m", "0s", "-1h", "99999h", "2026-11-24", "2099-01-01"]),
            junk,
        )
    if name in ("actor", "name", "admin"):
        return st.one_of(st.sampled_from(["worker1", "officer1", "admin", "x y", "Root"]), junk)
    return junk


def _structured_argv(paths: list[tuple[str, ...]], ids: list[str], token: str) -> Any:
    @st.composite
    def build(draw: Any) -> list[str]:
        path = draw(st.sampled_from(paths))
        argv = list(path)
        for param in _command(path).params:
            if not param.required and not draw(st.integers(0, 6)):
                continue  # now and then leave an optional one out
            if isinstance(param, click.Argument):
                count = param.nargs if param.nargs > 0 else draw(st.integers(1, 3))
                argv += [draw(_value(param, ids, token)) for _ in range(count)]
            elif isinstance(param, click.Option):
                flag = draw(st.sampled_from(param.opts))
                if param.is_flag:
                    argv.append(flag)
                else:
                    repeat = draw(st.integers(1, 3)) if param.multiple else 1
                    for _ in range(repeat):
                        argv += [flag, draw(_value(param, ids, token))]
        return argv

    return build()


def _write_input_files(token: str) -> None:
    from tests.test_records import marked_rows

    rows = marked_rows(3)
    rows[1]["guardian_phone"] = "=1+1"
    Path("in.csv").write_bytes(_csv_bytes(rows, list(rows[0])))
    Path("in.jsonl").write_bytes(b'{"name": "\\u0000"}\n' + b"[" * 50_000 + b"\n")
    Path("pass.txt").write_text("short\n")
    Path("token.txt").write_text(token)
    Path("schema.toml").write_bytes(b"[" * 10_000)
    Path("proof.json").write_text('{"format": "childvault-entry-proof/1", "seq": -1}')


def test_arbitrary_command_lines_exit_cleanly_and_write_nothing_on_rejection(
    template: tuple[Path, dict[str, Identity]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any argv, as a staff member, an officer or an admin: exit 0-5, never a
    traceback or an 'internal error'; on a non-zero exit no data table changed
    (a refusal may append its ``denied`` or ``error`` log entry, by design), and
    the log still verifies. Half the command lines are built from each
    command's own parameters with hostile values, so they reach the library."""
    world = copy_world(*template, tmp_path / "w")
    with world.open("worker1") as v:
        ids = add_children(v, 3)
        req = v.request_access(ids[:2], ["name"], "case_management", "cli")
        pending = v.request_access(ids[2:], ["name"], "case_management", "cli")
    with world.open("officer1") as v:
        approval = v.approve(req, uses=10)
    ids = [*ids, req, pending, approval.grant_id]
    paths = [p for p in _command_paths(cli) if p != ("demo",)]
    exits: dict[int, int] = {}

    @settings(HOSTILE, max_examples=250)
    @given(
        user=st.sampled_from(["worker1", "worker1", "officer1", "admin"]),
        argv=st.one_of(
            _structured_argv(paths, ids, approval.token),
            _structured_argv(paths, ids, approval.token),
            _structured_argv(paths, ids, approval.token),
            st.tuples(
                st.one_of(st.sampled_from(paths), st.lists(st.text(max_size=12), max_size=2)),
                st.lists(ARGS, max_size=7),
            ).map(lambda t: [*t[0], *t[1]]),
        ),
        as_json=st.booleans(),
    )
    def check(user: str, argv: list[str], as_json: bool) -> None:
        argv = [*(["--json"] if as_json else []), *argv]
        if "--home" in argv or "--as" in argv:
            return
        before = table_digests(world)
        entries = _audit_size(world)
        v = world.open(user)
        obj = Ctx(home=None, user=None, as_json=False, _vault=v)
        env = {"CHILDVAULT_HOME": str(world.home), "CHILDVAULT_USER": user}
        with deadline(120, f"childvault {argv!r}"):
            result = runner.invoke(cli, argv, obj=obj, env=env, input="")
        v.close()
        exits[result.exit_code] = exits.get(result.exit_code, 0) + 1
        assert result.exit_code in range(6), (argv, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (
            argv,
            repr(result.exception),
        )
        assert "internal error" not in result.output and "Traceback" not in result.output
        if result.exit_code != 0:
            assert table_digests(world) == before, argv
            new = _audit_tail(world, entries)
            assert all(e["outcome"] in ("denied", "error") for e in new), (argv, new)

    runner = CliRunner()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # relative --out paths land here
    _write_input_files(approval.token)
    check()
    with world.open("admin") as v:
        v.verify_audit()
    record_result(
        "test_arbitrary_command_lines_exit_cleanly_and_write_nothing_on_rejection",
        examples=sum(exits.values()),
        exit_codes=dict(sorted(exits.items())),
    )


def _audit_size(world: World) -> int:
    from tests._insider import Insider

    with Insider(world, "worker1") as insider:
        return insider.count("audit")


def _audit_tail(world: World, start: int) -> list[dict[str, Any]]:
    from tests._insider import Insider, at_least

    with Insider(world, "worker1") as insider:
        rows = insider.rows("audit", ["entry"], where={"seq": at_least(start)}, order_by="seq")
        return [json.loads(bytes(e)) for (e,) in rows]
