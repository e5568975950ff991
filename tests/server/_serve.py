"""Test entry point: a real ``childvault.server`` process (``python -m tests.server._serve``).

Reads the users from a JSON file (``{"name": ["<base64 Ed25519 key>", active]}``),
writes every audited refusal as a JSON line to ``--audit`` and the access log
to stderr, and serves until SIGTERM. Limits are passed small so the tests of
slow and large requests stay short.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from childvault.keys._encoding import unb64
from childvault.server import AuthRefusal, StaticKeyResolver, create_app, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the app, serve."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=Path, required=True)
    parser.add_argument("--audit", type=Path, required=True)
    parser.add_argument("--listen", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--max-body", type=int, default=64 * 1024)
    parser.add_argument("--header-timeout", type=float, default=2.0)
    parser.add_argument("--receive-timeout", type=float, default=2.0)
    parser.add_argument("--body-timeout", type=float, default=6.0)
    parser.add_argument("--shutdown-timeout", type=int, default=10)
    parser.add_argument("--allowed-host", action="append", default=[])
    args = parser.parse_args(argv)

    users = json.loads(args.users.read_text())
    resolver = StaticKeyResolver({name: (unb64(k), bool(a)) for name, (k, a) in users.items()})
    audit_file = args.audit.open("a", encoding="utf-8", buffering=1)

    def audit(event: AuthRefusal) -> None:
        audit_file.write(json.dumps(dataclasses.asdict(event)) + "\n")

    # The access log (childvault.server.access) and the server's warnings
    # (childvault.server) both go to stderr, which the tests read.
    server_logger = logging.getLogger("childvault.server")
    server_logger.addHandler(logging.StreamHandler(sys.stderr))
    server_logger.setLevel(logging.INFO)

    app = create_app(
        resolver,
        audit=audit,
        max_body=args.max_body,
        receive_timeout=args.receive_timeout,
        body_timeout=args.body_timeout,
    )
    run(
        app,
        args.listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        header_timeout=args.header_timeout,
        shutdown_timeout=args.shutdown_timeout,
        allowed_hosts=args.allowed_host,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
