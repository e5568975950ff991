"""``childvault doctor`` for Vault/OpenBao: what the server and the token can do.

Read-only checks: server health, the token (lookup-self), the two mounts, the
two Transit keys (including a decryption floor lowered after a rotation), the
audit devices (when the token may list them), and the token's capabilities
on every path childvault uses, from which the childvault roles the token can
act as are derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from childvault._i18n import _t
from childvault.keys._errors import (
    AccessDenied,
    ChildVaultError,
    ConfigError,
    ProviderUnavailable,
)
from childvault.keys._openbao._http import Connection
from childvault.keys._openbao._settings import VaultSettings

__all__ = ["diagnose", "probe_paths", "roles"]


def _message(exc: ChildVaultError) -> str:
    """The error's message as raised: a marked one stays translatable for doctor."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, str) else str(exc)


def probe_paths(settings: VaultSettings) -> dict[str, str]:
    """Label -> an API path whose capabilities tell what the token may do."""
    s = settings
    probe = "doctor-probe"
    return {
        "encrypt": f"{s.transit_mount}/encrypt/{s.key_name}",
        "decrypt": f"{s.transit_mount}/decrypt/{s.key_name}",
        "rewrap": f"{s.transit_mount}/rewrap/{s.key_name}",
        "rotate": f"{s.transit_mount}/keys/{s.key_name}/rotate",
        "config": f"{s.transit_mount}/keys/{s.key_name}/config",
        "hmac": f"{s.transit_mount}/hmac/{s.index_key_name}",
        "kv_data": f"{s.kv_mount}/data/records/{probe}",
        "kv_destroy": f"{s.kv_mount}/destroy/records/{probe}",
        "kv_metadata": f"{s.kv_mount}/metadata/records/{probe}",
        "wrapping_lookup": "sys/wrapping/lookup",
        "wrapping_unwrap": "sys/wrapping/unwrap",
    }


def diagnose(conn: Connection, settings: VaultSettings) -> dict[str, Any]:
    """Health report for ``childvault doctor``. Never raises for a down server.

    Keys: ``addr``, ``namespace``, ``reachable``, ``initialized``,
    ``sealed``, ``version``, ``token`` (valid, policies, ttl), ``mounts``,
    ``keys``, ``capabilities`` (per product path), ``roles`` (which
    childvault roles the token can act as), ``problems`` (human-readable)
    and ``ok``.
    """
    s = settings
    report: dict[str, Any] = {
        "provider": "vault",
        "addr": s.addr,
        "namespace": s.namespace,
        "reachable": False,
        "initialized": None,
        "sealed": None,
        "version": None,
        "token": None,
        "mounts": {},
        "keys": {},
        "capabilities": {},
        "roles": [],
        "problems": [],
        "ok": False,
    }
    problems: list[str] = report["problems"]
    try:
        health = conn.call("GET", "sys/health", ok=(200, 429, 472, 473, 501, 503), auth=False).data
    except (ProviderUnavailable, ConfigError, AccessDenied) as exc:
        problems.append(_message(exc))
        return report
    report["reachable"] = True
    report["initialized"] = health.get("initialized")
    report["sealed"] = health.get("sealed")
    report["version"] = health.get("version")
    if health.get("initialized") is False:
        problems.append(_t("the Vault server at {addr} is not initialised", addr=s.addr))
        return report
    if health.get("sealed"):
        problems.append(_t("the Vault server at {addr} is sealed: unseal it", addr=s.addr))
        return report
    try:
        look = conn.call("GET", "auth/token/lookup-self", need=("read", "the default policy")).data
        tdata = look.get("data") or {}
        report["token"] = {
            "valid": True,
            "policies": sorted(tdata.get("policies") or []),
            "ttl": tdata.get("ttl"),
            "expire_time": tdata.get("expire_time"),
        }
    except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
        report["token"] = {"valid": False}
        problems.append(_message(exc))
        return report
    for label, mount in (("transit", s.transit_mount), ("kv", s.kv_mount)):
        entry: dict[str, Any] = {"path": mount, "present": None, "type": None}
        try:
            reply = conn.call("GET", f"sys/internal/ui/mounts/{mount}", ok=(200, 403, 404))
            if reply.status == 200:
                data = reply.data.get("data") or {}
                entry["present"] = True
                entry["type"] = data.get("type")
                entry["options"] = data.get("options")
            elif reply.status == 404:
                entry["present"] = False
        except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
            problems.append(_message(exc))
        report["mounts"][label] = entry
        if entry["present"] is False:
            problems.append(
                _t(
                    "no {label} mount at {mount}/: run `childvault vault setup`",
                    label=label,
                    mount=mount,
                )
            )
    for label, name in (("dek", s.key_name), ("index", s.index_key_name)):
        kentry: dict[str, Any] = {"name": name, "present": None}
        try:
            reply = conn.call("GET", f"{s.transit_mount}/keys/{name}", ok=(200, 403, 404))
            if reply.status == 200:
                data = reply.data.get("data") or {}
                kentry.update(
                    present=True,
                    type=data.get("type"),
                    derived=data.get("derived"),
                    exportable=data.get("exportable"),
                    latest_version=data.get("latest_version"),
                    min_decryption_version=data.get("min_decryption_version"),
                    min_encryption_version=data.get("min_encryption_version"),
                    min_available_version=data.get("min_available_version"),
                )
            elif reply.status == 404:
                kentry["present"] = False
        except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
            problems.append(_message(exc))
        report["keys"][label] = kentry
        if kentry["present"] is False:
            problems.append(_t("no Transit key {name}: run `childvault vault setup`", name=name))
        if (
            label == "dek"
            and kentry.get("present")
            and (kentry.get("derived") is not True or kentry.get("exportable") is not False)
        ):
            problems.append(_t("Transit key {name} must be derived and not exportable", name=name))
        if label == "dek" and kentry.get("present"):
            problems.extend(_lowered_floor(name, kentry))
    report["audit_devices"] = _audit_devices(conn, problems)
    paths = probe_paths(s)
    try:
        reply = conn.call(
            "POST",
            "sys/capabilities-self",
            body={"paths": list(paths.values())},
            need=("update", "the default policy"),
        )
        caps = reply.data.get("data") or reply.data
        report["capabilities"] = {
            label: {"path": path, "capabilities": sorted(caps.get(path) or [])}
            for label, path in paths.items()
        }
    except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
        problems.append(_message(exc))
    report["roles"] = roles(report["capabilities"])
    report["ok"] = not problems
    return report


def _lowered_floor(name: str, key: Mapping[str, Any]) -> list[str]:
    """A decryption floor lowered after a rotation retired the older versions.

    The admin policy may set ``min_decryption_version`` (rotation raises it),
    and Vault's ``allowed_parameters`` match values, not "only upwards". A
    rotation raises both floors together, so a decryption floor below the
    encryption floor means someone lowered it again: retired versions decrypt.
    """
    try:
        dec = int(key.get("min_decryption_version") or 0)
        enc = int(key.get("min_encryption_version") or 0)
    except (TypeError, ValueError):
        return []
    if enc and dec < enc:
        return [
            _t(
                "Transit key {name}: min_decryption_version {dec} is below "
                "min_encryption_version {enc}: retired key versions decrypt again (lowered "
                "after a rotation?); raise it, and use `childvault keys rotate --trim` so "
                "retired versions cannot come back",
                name=name,
                dec=dec,
                enc=enc,
            )
        ]
    return []


def _audit_devices(conn: Connection, problems: list[str]) -> list[str] | None:
    """The enabled audit devices' paths, or None if this token may not list them.

    Listing needs ``sudo`` on ``sys/audit`` (the childvault-admin policy has it;
    staff and officer tokens do not, and then nothing is claimed either way).
    """
    try:
        reply = conn.call("GET", "sys/audit", ok=(200, 403))
    except (ProviderUnavailable, AccessDenied, ConfigError) as exc:
        problems.append(_message(exc))
        return None
    if reply.status != 200:
        return None
    data = reply.data.get("data")
    table: dict[str, Any] = data if isinstance(data, dict) else reply.data
    devices = sorted(p for p, d in table.items() if isinstance(d, dict) and d.get("type"))
    if not devices:
        problems.append(
            _t(
                "no audit device is enabled on the Vault server: nothing outside childvault "
                "records who decrypted what (docs/vault.md, audit device)"
            )
        )
    return devices


def roles(capabilities: Mapping[str, Any]) -> list[str]:
    """The childvault roles whose capabilities the probed ones include."""

    def has(label: str, cap: str) -> bool:
        entry = capabilities.get(label) or {}
        caps = entry.get("capabilities") or []
        return cap in caps or "root" in caps

    out = []
    # Staff salts are create-only: no "read" is needed (or granted) to write records.
    if has("encrypt", "update") and has("kv_data", "create"):
        out.append("staff")
    if has("decrypt", "update") and has("kv_data", "read") and has("kv_destroy", "update"):
        out.append("officer")
    if has("rotate", "update") and has("rewrap", "update") and has("config", "update"):
        out.append("admin")
    return out
