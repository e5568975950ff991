"""Does this server enforce Control Groups? A probe with a real controlled request.

Vault Enterprise answers a request on a path under a ``control_group`` stanza
with a wrapping token created on ``sys/control-group/request``, to be
authorised by the named approvers before it can be unwrapped. OpenBao 2.x
accepts such a policy but does not enforce it (the issue's trial saw an
answer with neither data nor ``wrap_info``). The probe writes a throwaway
policy on the harmless blind-index ``hmac`` path, sends one request with a
token holding only that policy, reads the answer, and removes both.
"""

from __future__ import annotations

from typing import Any

from childvault.keys._openbao._http import Connection
from childvault.keys._openbao._policies import ROOT
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["PROBE_POLICY", "probe_control_groups"]

#: Name of the throwaway policy (and identity group) the probe uses.
PROBE_POLICY = "childvault-control-group-probe"


def _probe_policy(settings: VaultSettings) -> str:
    path = f"{settings.transit_mount}/hmac/{settings.index_key_name}"
    return (
        f'path "{path}" {{\n'
        '  capabilities = ["update"]\n'
        "  control_group = {\n"
        '    factor "probe" {\n'
        '      controlled_capabilities = ["update"]\n'
        "      identity {\n"
        f'        group_names = ["{PROBE_POLICY}"]\n'
        "        approvals   = 1\n"
        "      }\n"
        "    }\n"
        "  }\n"
        "}\n"
    )


def probe_control_groups(settings: VaultSettings, token: str) -> dict[str, Any]:
    """Send one controlled request; report whether the server held it for approval.

    Needs a root or bootstrap token (it writes a policy and creates a token).
    Returns ``{"enforced": bool, "answer": "control-group" | "data" | "wrapped" |
    "neither" | "refused"}``; leaves nothing behind.
    """
    root = Connection(settings, token=token, approle=None)
    try:
        root.call(
            "PUT",
            f"sys/policies/acl/{PROBE_POLICY}",
            body={"policy": _probe_policy(settings)},
            need=("update", ROOT),
        )
        created = root.call(
            "POST",
            "auth/token/create",
            body={"policies": [PROBE_POLICY], "no_default_policy": True, "ttl": "2m"},
            need=("update", ROOT),
        ).data
        probe_token = str((created.get("auth") or {}).get("client_token") or "")
        answer = "refused"
        try:
            probe = Connection(settings, token=probe_token, approle=None)
            try:
                reply = probe.call(
                    "POST",
                    f"{settings.transit_mount}/hmac/{settings.index_key_name}",
                    body={"input": "Y29udHJvbC1ncm91cC1wcm9iZQ=="},
                    ok=(200, 400, 403),
                )
            finally:
                probe.close()
            info = reply.data.get("wrap_info")
            if reply.status != 200:
                answer = "refused"
            elif isinstance(info, dict):
                held = str(info.get("creation_path") or "").startswith("sys/control-group")
                answer = "control-group" if held else "wrapped"
            elif reply.data.get("data"):
                answer = "data"
            else:
                answer = "neither"
        finally:
            if probe_token:
                root.call(
                    "POST",
                    "auth/token/revoke",
                    body={"token": probe_token},
                    ok=(200, 204, 400),
                    need=("update", ROOT),
                )
            root.call(
                "DELETE",
                f"sys/policies/acl/{PROBE_POLICY}",
                ok=(200, 204, 404),
                need=("update", ROOT),
            )
    finally:
        root.close()
    return {"enforced": answer == "control-group", "answer": answer}
