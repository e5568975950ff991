"""A command on a session does only what it needs (issue 18: a CLI command on an
unlocked session within 0.3 s; docs/benchmarks.md, third round, session 6).

Structural checks, no timings:

- a page of ``list`` reads its key blobs and stored fields in a fixed number of
  queries, however many records it shows (not three queries a record), and
  still flags every kind of altered row it reads that way;
- the log append and the printing of a listing compile neither the log's entry
  grammar nor the terminal-escaping pattern (each cost more CPU than the
  append or the printing itself);
- the console script raises the collector's first threshold, and importing the
  command line in-process (tests, the library) leaves it alone.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

from click.testing import CliRunner, Result

from childvault.cli.main import cli
from tests._insider import Insider
from tests.conftest import PASSPHRASES, World, add_children

_PROBE = """
import gc, json, sys
from childvault._entry import main
sys.argv = ["childvault", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
finally:
    sys.stdout.flush()
    from childvault.cli import _context
    from childvault.vault import _audit_entry
    sys.stderr.write(json.dumps({
        "grammar": _audit_entry._entry_re.cache_info().currsize,
        "unsafe": _context._unsafe.cache_info().currsize,
        "threshold": gc.get_threshold()[0],
    }))
"""


def _env(world: World) -> dict[str, str]:
    return {
        "CHILDVAULT_HOME": str(world.home),
        "CHILDVAULT_USER": "worker1",
        "CHILDVAULT_PASSPHRASE": PASSPHRASES["worker1"],
        "LANG": "C.UTF-8",
    }


def _run(world: World, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=_env(world), catch_exceptions=False)


def _queries(world: World, limit: int) -> list[str]:
    """The SQL statements one library page of ``limit`` records runs."""
    with world.open("worker1") as v:
        v.list_page(limit=1)  # the trust state and record heads: resumed once
        seen: list[str] = []
        conn = v._session.db._conn.conn  # type: ignore[attr-defined]
        conn.set_trace_callback(seen.append)
        try:
            page = v.list_page(limit=limit)
        finally:
            conn.set_trace_callback(None)
        assert len(page.records) == limit and not page.unverified
        return seen


def test_a_page_reads_its_rows_in_a_fixed_number_of_queries(world: World) -> None:
    with world.open("worker1") as v:
        add_children(v, 12)
    small, large = _queries(world, 2), _queries(world, 10)
    # The same statements for 2 and for 10 records (the log append differs by nothing).
    assert len(small) == len(large), (small, large)
    reads = [q for q in large if "FROM keyblobs" in q or "FROM fields" in q]
    assert len(reads) == 2, reads


def test_an_altered_field_or_key_blob_on_the_page_is_still_flagged(world: World) -> None:
    with world.open("worker1") as v:
        ids = sorted(add_children(v, 4))
        other = v._session.db.records.fields_many([ids[3]])[ids[3]]
    with Insider(world, "worker2") as insider:
        # Another record's sealed value copied over one field, a field row removed,
        # and a key blob replaced: each differs from what the writer signed.
        assert (
            insider.update(
                "fields", {"value": other["name"][1]}, {"record_id": ids[0], "name": "name"}
            )
            == 1
        )
        assert insider.delete("fields", {"record_id": ids[1], "name": "health"}) == 1
        assert insider.update("keyblobs", {"blob": b"\x00" * 64}, {"record_id": ids[2]}) == 1
    doc = json.loads(_run(world, "--json", "list").stdout)
    assert doc["ok"] is False
    assert sorted(doc["unverified"]) == ids[:3]
    # The names shown are those of the rows checked: the removed field is not shown.
    shown = {r["id"]: r["fields"] for r in doc["records"]}
    assert "health" not in shown[ids[1]] and "health" in shown[ids[3]]
    human = _run(world, "list")
    assert human.exit_code == 4
    assert sum("UNVERIFIED" in line for line in human.stdout.splitlines()) == 3


def test_a_listing_compiles_neither_the_entry_grammar_nor_the_escape_pattern(
    world: World,
) -> None:
    with world.open("worker1") as v:
        add_children(v, 3)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, "list"],
        capture_output=True,
        text=True,
        env={**os.environ, **_env(world)},
        check=True,
    )
    assert "3 record(s)" in done.stdout  # the probe ran the command
    probe = json.loads(done.stderr)
    assert probe == {"grammar": 0, "unsafe": 0, "threshold": 100_000}


def test_escaping_still_escapes_and_in_process_use_keeps_the_gc_threshold() -> None:
    from childvault.cli._context import safe

    assert safe("a\x1b]0;title\x07b\u202e") == "a\\x1b]0;title\\x07b\\u202e"
    assert safe("个案 ok") == "个案 ok"
    # This process imported the command line (above) without the console script.
    assert gc.get_threshold()[0] != 100_000
