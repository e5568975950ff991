"""A test client process: ``python -m tests.server._client URL IDENTITY-FILE ACTION ...``.

Each concurrent client of the tests is one of these processes, acting through
the library (``Vault.connect``) with its own identity file. It prints one JSON
line with what it did. Every loop is bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

from childvault.keys import ChildVaultError, Identity, UsageError
from childvault.vault import Vault

#: Upper bound on how long an officer keeps looking for requests to decide.
OFFICER_PATIENCE = 900.0


def main(argv: list[str]) -> int:
    """Run one client (see the module doc)."""
    url, identity_file, action, *rest = argv
    ident = Identity.load(Path(identity_file), os.environ["CHILDVAULT_PASSPHRASE"])
    with Vault.connect(url, ident) as v:
        if action == "import":
            # The load tests' files repeat the sample's 200 rows on purpose;
            # duplicate detection has its own tests (tests/test_import_encodings.py).
            report = v.import_file(Path(rest[0]), allow_duplicates=True)
            print(json.dumps({"imported": report.imported}))
        elif action == "request":
            count, records = int(rest[0]), rest[1:]
            ids = [
                v.request_access(records, ["name"], "case_management", f"visit {i}")
                for i in range(count)
            ]
            print(json.dumps({"requests": ids}))
        elif action == "approve":
            expected = int(rest[0])
            approved: list[str] = []
            deadline = time.monotonic() + OFFICER_PATIENCE
            while time.monotonic() < deadline:
                decided = [r for r in v.requests(status=None) if r.status != "pending"]
                if len(decided) >= expected:
                    break
                for req in v.requests():
                    # UsageError: the other officer decided it meanwhile.
                    with contextlib.suppress(UsageError):
                        approved.append(v.approve(req.id).grant_id)
                time.sleep(0.2)
            print(json.dumps({"approved": approved}))
        else:
            raise SystemExit(f"unknown action {action}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ChildVaultError as exc:
        print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        sys.exit(1)
