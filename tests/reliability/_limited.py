"""Run library operations with no room to write: ``python -m tests.reliability._limited SPEC``.

The vault is opened first (SQLite sets up its shared-memory file), then the
file-size limit is lowered to 1 byte with SIGXFSZ ignored, so every write
that would grow a file (the WAL above all, so every log append) fails with
EFBIG, as on a full disk. Each operation's outcome is printed as JSON: the
error type, message and exit code, or what it returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from childvault.vault import Vault
from tests.conftest import PASSPHRASES
from tests.reliability._support import limit_file_size


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    results: dict[str, Any] = {}
    with Vault.open(spec["home"], spec["user"], PASSPHRASES[spec["user"]]) as v:
        limit_file_size(1)
        for name, call in _operations(v, spec).items():
            try:
                results[name] = {"returned": repr(call())[:200]}
            except Exception as exc:  # reported to the test, which checks the type
                code = getattr(exc, "exit_code", None)
                results[name] = {"error": type(exc).__name__, "message": str(exc), "exit": code}
    print(json.dumps(results))


def _operations(v: Vault, spec: dict[str, Any]) -> dict[str, Any]:
    from tests.conftest import TODAY, child_values, consent

    ops: dict[str, Any] = {
        "list": lambda: list(v.list_records()),
        "requests": lambda: v.requests(),
    }
    if "staff" in v.roles:
        # The system clock: dated from today, so the add fails on the full disk,
        # not on a consent left behind the back-dating window.
        ops["add_record"] = lambda: v.add_record(
            "child", child_values(7, today=TODAY), consent(today=TODAY)
        )
        ops["request"] = lambda: v.request_access(
            spec["records"], ["name"], "case_management", "full disk"
        )
        if spec.get("token"):
            ops["read"] = lambda: v.read_with_grant(spec["token"])
    if "officer" in v.roles:
        ops["approve"] = lambda: v.approve(spec["request"])
        ops["checkpoint"] = lambda: v.checkpoint()
        ops["correct"] = lambda: v.correct(spec["records"][0], "name", "改正")
        ops["delete"] = lambda: v.delete(spec["records"][1], "full disk test")
    return ops


if __name__ == "__main__":
    main(sys.argv[1])
