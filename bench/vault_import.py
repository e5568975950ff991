"""Vault-provider import throughput against a bare hvac floor and two peers.

Everything talks to the same OpenBao dev server (loopback, started by the run):

- **childvault**: ``Vault.import_file`` as a staff user with a
  ``childvault-staff`` token, in process (no Argon2id unlock): per record one KV
  v2 create of its salt document (``cas=0``), Transit ``encrypt`` batches of 200
  field DEKs (derived key, per-field context), Transit ``hmac`` batches for the
  two blind indexes, then the SQLCipher writes and the audit log.
- **floor (a)**: a bare ``hvac`` loop doing one KV v2 create (``cas=0``, 32
  random bytes) per record under the same mount and policy — the one round trip
  per record that the design (a salt per record in Vault) cannot batch.
- **peer (b)**: encryption as a service, one Transit ``encrypt`` call per field
  (plaintext = the field value, the same derived key with the record id as
  context), the ciphertexts written to plain ``sqlite3`` per 500 rows.
- **peer (c)**: Tink ``KmsEnvelopeAead`` (AES256-GCM DEK per field, the field
  name as associated data) whose KEK is a Transit key of the same server through
  ``tink.integration.hcvault``; one Transit call per field. Tink's integration
  always sends an empty context, so it cannot use childvault's *derived* key: it
  gets its own non-derived ``aes256-gcm96`` key on the same Transit mount.
"""

from __future__ import annotations

import base64
import os
import secrets
import sqlite3
from pathlib import Path
from typing import Any

from bench._bao import Bao
from bench._common import (
    CONSENT_COLS,
    FIELDS,
    Config,
    Figure,
    Result,
    loadavg,
    ratio,
    read_csv,
    timed,
    write_csv,
)

NAME = "vault_import"
BATCH = 500
TINK_KEY = "bench-tink-kek"


def _childvault(bao: Bao, home: Path, source: Path) -> float:
    tpl = bao.template
    tpl.copy(home)
    with tpl.open(home, "worker1") as v:
        return timed(lambda: v.import_file(source))


def _floor(bao: Bao, n: int) -> float:
    client = bao.client(bao.template.tokens["worker1"])
    mount = bao.settings.kv_mount

    def run() -> None:
        for _ in range(n):
            client.secrets.kv.v2.create_or_update_secret(
                path=f"records/{secrets.token_hex(16)}",
                secret={"salt": base64.b64encode(os.urandom(32)).decode()},
                cas=0,
                mount_point=mount,
            )

    try:
        return timed(run)
    finally:
        client.adapter.close()


def _sqlite_sink(db: Path) -> tuple[sqlite3.Connection, str]:
    if db.exists():
        db.unlink()
    conn = sqlite3.connect(db)
    cols = ", ".join(f"{c} BLOB" for c in FIELDS)
    clear = ", ".join(f"{c} TEXT" for c in CONSENT_COLS)
    conn.execute(f"CREATE TABLE records (id TEXT PRIMARY KEY, {cols}, {clear})")
    sql = (
        f"INSERT INTO records (id, {', '.join((*FIELDS, *CONSENT_COLS))}) "
        f"VALUES ({', '.join('?' * (1 + len(FIELDS) + len(CONSENT_COLS)))})"
    )
    return conn, sql


def _transit_per_field(bao: Bao, db: Path, source: Path, n: int) -> float:
    client = bao.client(bao.template.tokens["worker1"])
    s = bao.settings

    def run() -> None:
        conn, sql = _sqlite_sink(db)
        batch: list[tuple[object, ...]] = []
        for i, row in enumerate(read_csv(source)):
            if i >= n:
                break
            rid = secrets.token_hex(16)
            context = base64.b64encode(rid.encode()).decode()
            cts = [
                client.secrets.transit.encrypt_data(
                    name=s.key_name,
                    plaintext=base64.b64encode(row[c].encode("utf-8")).decode(),
                    context=context,
                    mount_point=s.transit_mount,
                )["data"]["ciphertext"]
                for c in FIELDS
            ]
            batch.append((rid, *cts, *(row[c] for c in CONSENT_COLS)))
            if len(batch) >= BATCH:
                conn.executemany(sql, batch)
                conn.commit()
                batch = []
        conn.executemany(sql, batch)
        conn.commit()
        conn.close()

    try:
        return timed(run)
    finally:
        client.adapter.close()


def tink_status() -> str | None:
    """None if Tink's HashiCorp Vault integration imports here, else why not."""
    try:
        from tink import aead  # noqa: F401
        from tink.integration import hcvault  # noqa: F401
    except ImportError as exc:
        return f"tink is not usable on this Python: {exc}"
    return None


def _tink_setup(bao: Bao) -> tuple[object, object]:
    """A Tink envelope AEAD whose KEK is a (non-derived) Transit key of the same server."""
    from tink import aead
    from tink.integration import hcvault

    aead.register()
    s = bao.settings
    root = bao.client(bao.server.root_token)
    root.secrets.transit.create_key(
        name=TINK_KEY, key_type="aes256-gcm96", mount_point=s.transit_mount
    )
    root.adapter.close()
    # Tink needs encrypt on its key: a token for exactly that (and decrypt, to check).
    bao.server.api(
        "PUT",
        "sys/policies/acl/bench-tink",
        json={
            "policy": (
                f'path "{s.transit_mount}/encrypt/{TINK_KEY}" {{ capabilities = ["update"] }}\n'
                f'path "{s.transit_mount}/decrypt/{TINK_KEY}" {{ capabilities = ["update"] }}\n'
            )
        },
    ).raise_for_status()
    client = bao.client(bao.server.token(["bench-tink"]))
    remote = hcvault.new_aead(f"{s.transit_mount}/keys/{TINK_KEY}", client)
    env = aead.KmsEnvelopeAead(aead.aead_key_templates.AES256_GCM, remote)
    probe = env.encrypt(b"probe", b"ad")
    assert env.decrypt(probe, b"ad") == b"probe"
    return env, client


def _tink(setup: tuple[object, object], db: Path, source: Path, n: int) -> float:
    env: Any = setup[0]

    def run() -> None:
        conn, sql = _sqlite_sink(db)
        batch: list[tuple[object, ...]] = []
        for i, row in enumerate(read_csv(source)):
            if i >= n:
                break
            rid = secrets.token_hex(16)
            cts = [env.encrypt(row[c].encode("utf-8"), f"{rid}|{c}".encode()) for c in FIELDS]
            batch.append((rid, *cts, *(row[c] for c in CONSENT_COLS)))
            if len(batch) >= BATCH:
                conn.executemany(sql, batch)
                conn.commit()
                batch = []
        conn.executemany(sql, batch)
        conn.commit()
        conn.close()

    return timed(run)


def run(cfg: Config, bao: Bao) -> Result:
    """Import ``cfg.vault_records`` records (peers: ``cfg.vault_peer_records``), ``cfg.reps`` x."""
    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    n, m = cfg.vault_records, cfg.vault_peer_records
    source = write_csv(work / "records.csv", n)
    peer_source = write_csv(work / "peer.csv", m)
    tink_missing = tink_status()
    tink = _tink_setup(bao) if tink_missing is None else None
    cv, fl, tr, tk, loads = [], [], [], [], []
    for rep in range(cfg.reps):
        cv.append(n / _childvault(bao, work / f"home{rep % 2}", source))
        fl.append(n / _floor(bao, n))
        tr.append(m / _transit_per_field(bao, work / "transit.sqlite", peer_source, m))
        if tink is not None:
            tk.append(m / _tink(tink, work / "tink.sqlite", peer_source, m))
        loads.append(loadavg())
    unit = "records/s"
    f_cv = Figure(NAME, f"childvault import, Vault provider ({n:,} records)", unit, cv)
    f_fl = Figure(NAME, f"floor (a): bare hvac KV create per record ({n:,})", unit, fl)
    f_tr = Figure(NAME, f"peer (b): Transit encrypt call per field ({m:,} records)", unit, tr)
    res = Result([f_cv, f_fl, f_tr])
    res.ratios.append(ratio(NAME, "childvault / floor (a) KV create", f_cv, f_fl, at_least=0.8))
    res.ratios.append(
        ratio(NAME, "childvault / peer (b) Transit per field", f_cv, f_tr, at_least=5)
    )
    if tink is not None:
        f_tk = Figure(NAME, f"peer (c): Tink KmsEnvelopeAead per field ({m:,} records)", unit, tk)
        res.figures.append(f_tk)
        res.ratios.append(ratio(NAME, "childvault / peer (c) Tink envelope", f_cv, f_tk))
    else:
        res.notes.append(tink_missing)
    res.notes.append(f"load average after each repetition: {' | '.join(loads)}")
    return res
