"""One process of the concurrency test: ``python -m tests.reliability._worker SPEC.json``.

It unlocks its user's identity (Argon2, slow), says it is ready, waits for the
start signal so that every process runs at the same time, then performs a
fixed number of operations on the shared home, each in its own transaction,
and prints a JSON summary. Errors are caught and reported (type and message),
never hidden: the test fails on any.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from childvault.keys import Identity
from childvault.vault import NewRecordInput, Vault
from tests.conftest import PASSPHRASES, child_values, consent


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    home = Path(spec["home"])
    user = spec["user"]
    moment = datetime.fromisoformat(spec["clock"])
    identity = Identity.load(home / "identities" / f"{user}.id", PASSPHRASES[user])
    Path(spec["ready"]).touch()
    deadline = time.monotonic() + 300
    while not Path(spec["go"]).exists():
        if time.monotonic() > deadline:
            raise SystemExit("no start signal")
        time.sleep(0.005)
    out: dict[str, Any] = {"user": user, "kind": spec["kind"], "errors": []}

    def opened() -> Vault:
        return Vault.open(home, identity=identity, clock=lambda: moment)

    v = opened()
    try:
        if spec["kind"] == "writer":
            _writer(v, opened, spec, out)
        else:
            _reader(v, opened, spec, out)
    finally:
        v.close()
    print(json.dumps(out))


def _writer(v: Vault, opened: Any, spec: dict[str, Any], out: dict[str, Any]) -> None:
    created: list[str] = out.setdefault("created", [])
    requests: list[str] = out.setdefault("requests", [])
    approved: list[str] = out.setdefault("approved", [])
    base = spec["seed"]
    for i in range(spec["ops"]):
        if i and i % 10 == 0:
            v.close()
            v = opened()  # opening while others write is part of the test
        try:
            if i % 5 == 4 and created:
                requests.append(
                    v.request_access(created[-2:], ["name"], "case_management", "并发测试")
                )
            else:
                values = child_values(base + i)
                created.extend(v.add_records([NewRecordInput("child", values, consent())]))
            target = spec.get("approve_for")
            if target:
                for req in v.requests("pending"):
                    if req.requester == target:
                        approved.append(v.approve(req.id).grant_id)
        except Exception as exc:  # reported, and the test fails on it
            out["errors"].append(f"op {i}: {type(exc).__name__}: {exc}")
    v.close()


def _reader(v: Vault, opened: Any, spec: dict[str, Any], out: dict[str, Any]) -> None:
    expected: dict[str, dict[str, str]] = spec["expected"]
    out["reads"] = 0
    out["verifies"] = 0
    for i in range(spec["ops"]):
        token = spec["tokens"][i // spec["uses"]]
        try:
            if i and i % 7 == 0:
                v.close()
                v = opened()
            values = v.read_with_grant(token)
            if values != expected:
                out["errors"].append(f"op {i}: read returned other values")
            out["reads"] += 1
            if i % 5 == 4:
                v.verify_audit()
                out["verifies"] += 1
                sum(1 for _ in v.list_records())
        except Exception as exc:  # reported, and the test fails on it
            out["errors"].append(f"op {i}: {type(exc).__name__}: {exc}")
    v.close()


if __name__ == "__main__":
    main(sys.argv[1])
