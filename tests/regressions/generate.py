"""Build regression assets (see README.md): ``python -m tests.regressions.generate NAME``.

Assets are evidence: commit what this wrote once and never regenerate an
existing asset to make a test pass.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def rewritten_log_reports() -> dict[str, Any]:
    """Reports before and after an insider rewrote an entry about the record."""
    from tests.conftest import World, add_children, build_template
    from tests.test_proofs import _rewrite_log, _seq_of
    from tests.test_reports import grant

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        world = World(home, build_template(home))
        with world.open("worker1") as v:
            ids = add_children(v, 2)
        token = grant(world, ids, ("name",))
        with world.open("worker1") as v:
            v.read_with_grant(token)
        token = grant(world, [ids[0]], ("name", "address"), requester="officer2")
        with world.open("officer2") as v:
            earlier = v.subject_report(ids[0], token)
            vkeys = v.signer_vkeys()
        seq = _seq_of(earlier, "grant.read")
        _rewrite_log(world, seq)
        token = grant(world, [ids[0]], ("name",), requester="officer2", officer="officer1")
        with world.open("officer2") as v:
            later = v.subject_report(ids[0], token)
    return {
        "record_id": ids[0],
        "rewritten_seq": seq,
        "vkeys": vkeys,
        "earlier": earlier,
        "later": later,
    }


ASSETS = {"rewritten_log_reports.json": rewritten_log_reports}


def main(argv: list[str]) -> int:
    """Write the named assets; refuse to overwrite one that exists."""
    for name in argv:
        path = HERE / name
        if path.exists():
            print(f"{path} exists: assets are never regenerated", file=sys.stderr)
            return 1
        doc = ASSETS[name]()
        path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote tests/regressions/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
