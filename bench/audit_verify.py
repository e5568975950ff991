"""``audit verify`` of a large log against a bare SHA-256 chain over the same stored bytes.

State: a local-provider vault whose log is filled to ``cfg.audit_entries``
record.create-like entries with :func:`bench._raw.fill_log` (the product's
``_audit.append`` in transactions of 50,000, each entry signed by its actor),
then one officer checkpoint of the whole log (stored and witnessed), so
verification also checks a checkpoint root and signature. The verifier
(``worker1``) then runs ``audit verify`` once, untimed: that is the state of
anyone who has verified the log before (every command keeps it too).

Before each repetition the log grows by 1% (``cfg.audit_entries // 100``
new signed entries: the work done since the last verification), then:

- **audit verify** (what ``childvault audit verify`` runs, the default mode):
  ``Vault.verify_audit()`` — for every entry: re-hash, compare with the stored
  hash, check the ``prev`` link, fold into the Merkle frontier; every
  checkpoint's root and signature; actor signatures and signed statements
  only after the verifier's own signed "verified up to entry N, hash H"
  state, with the full grammar, ``seq`` and ``prev`` checks there too (the
  chain ending in H at N proves the entries before unchanged:
  docs/decisions.md). The Merkle tree of the prefix the verifier verified
  last time is not rebuilt: its frontier comes from the verifier's signed
  known tree (``trust_states`` row ``worker1#tree``), so only the 1% new
  entries are folded into it (third round, session 5).
- **audit verify --full**: ``Vault.verify_audit(full=True)`` — the same, with
  every entry's grammar, ``seq`` and actor signature and every statement
  checked again from the anchor.
- **bare chain**: one ``SELECT entry, hash FROM audit ORDER BY seq`` through the
  product's own Store connection (same SQLCipher database and settings), and
  ``hashlib.sha256(b"\\x00" + entry)`` per entry compared with the stored hash.
- **diagnostic** (not a target): on the same large log, the officer's
  ``Vault.approve`` of a one-record request (it checks the log from the
  officer's own last checkpoint on) against ``Vault.checkpoint`` (it verifies
  the whole log before signing, as every approval did before the second round
  of fixes), interleaved.
"""

from __future__ import annotations

import hashlib

from bench._common import (
    Config,
    Figure,
    Result,
    Template,
    build_template,
    loadavg,
    ratio,
    timed,
    write_csv,
)
from bench._raw import fill_log

NAME = "audit_verify"


def _bare_chain(store: object) -> int:
    conn = store._conn.conn  # the SQLCipher backend's raw connection
    sha = hashlib.sha256
    n = 0
    for entry, digest in conn.execute("SELECT entry, hash FROM audit ORDER BY seq"):
        if sha(b"\x00" + entry).digest() != digest:
            raise AssertionError(f"entry {n} does not match its hash")
        n += 1
    return n


def run(cfg: Config, tpl: Template | None = None) -> Result:
    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    if tpl is None:
        tpl = build_template(work / "template" / "home")
    home = tpl.copy(work / "home")
    size = fill_log(home, tpl.ids["worker1"], cfg.audit_entries - 1)
    with tpl.open(home, "officer1") as v:
        v.checkpoint()  # the last entry, and a signed checkpoint of all of them
        size = v._session.db.audit.size()
    ours, full, bare, loads = [], [], [], []
    step = max(1, cfg.audit_entries // 100)
    with tpl.open(home, "worker1") as v:
        v.verify_audit()  # untimed: the verifier's state, as after any earlier verification
    for _ in range(cfg.reps):
        size = fill_log(home, tpl.ids["worker1"], size + step)
        with tpl.open(home, "worker1") as v:
            report = None

            def verify() -> None:
                nonlocal report
                report = v.verify_audit()

            ours.append(size / timed(verify))
            assert report is not None and report.entries == size and report.checkpoints >= 1

            def verify_full() -> None:
                nonlocal report
                report = v.verify_audit(full=True)

            full.append(size / timed(verify_full))
            assert report is not None and report.entries == size
            counted = 0

            def chain() -> None:
                nonlocal counted
                counted = _bare_chain(v._session.db)

            bare.append(size / timed(chain))
            assert counted == size
            loads.append(loadavg())
    approve_ms, checkpoint_ms = _approval_on_a_long_log(cfg, tpl, home)
    unit = "entries/s"
    f_o = Figure(
        NAME, f"childvault audit verify ({size:,} entries, 1% new since the last)", unit, ours
    )
    f_f = Figure(NAME, f"childvault audit verify --full ({size:,} entries)", unit, full)
    f_b = Figure(NAME, f"bare hashlib SHA-256 chain, same stored bytes ({size:,})", unit, bare)
    f_a = Figure(
        NAME,
        f"diagnostic: approve of 1 record x 3 fields on this {size:,}-entry log",
        "ms",
        approve_ms,
        higher_is_better=False,
    )
    f_c = Figure(
        NAME,
        "diagnostic: `audit checkpoint` (whole-log check) on the same log",
        "ms",
        checkpoint_ms,
        higher_is_better=False,
    )
    res = Result([f_o, f_f, f_b, f_a, f_c])
    res.ratios.append(ratio(NAME, "audit verify / bare chain", f_o, f_b, at_least=0.5))
    res.ratios.append(ratio(NAME, "audit verify --full / bare chain", f_f, f_b))
    res.ratios.append(ratio(NAME, "diagnostic: approve / whole-log checkpoint", f_a, f_c))
    res.notes.append(f"load average after each repetition: {' | '.join(loads)}")
    return res


def _approval_on_a_long_log(
    cfg: Config, tpl: Template, home: object
) -> tuple[list[float], list[float]]:
    """Time ``approve`` (incremental check) and ``checkpoint`` (whole log), interleaved."""
    source = write_csv(cfg.workdir / NAME / "one-per-rep.csv", cfg.reps)
    with tpl.open(home, "worker1") as v:
        ids = list(v.import_file(source).record_ids)
        requests = [
            v.request_access([rid], ("name", "sex", "school"), "case_management", "bench")
            for rid in ids
        ]
    approve_ms, checkpoint_ms = [], []
    with tpl.open(home, "officer1") as v:
        for request in requests:
            approve_ms.append(timed(lambda r=request: v.approve(r)) * 1000)
            checkpoint_ms.append(timed(v.checkpoint) * 1000)
    return approve_ms, checkpoint_ms
