"""The report formats: their names, the committed keys and the digests binding a report to the log.

Shared by the report makers (:mod:`._reports`, :mod:`._svc_reports`) and the
standalone verifiers (:mod:`._report_verify`), so neither imports the other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

import rfc8785

#: ``format`` of a subject-access report.
SUBJECT_REPORT_FORMAT = "childvault-subject-report/1"
#: ``format`` of a single-entry inclusion proof (``childvault audit prove``).
ENTRY_PROOF_FORMAT = "childvault-entry-proof/1"
#: ``format`` of a breach-impact report.
INCIDENT_FORMAT = "childvault-incident-report/1"

# Keys of the report bound by the commitment in its report.subject log entry.
_COMMITTED = (
    "format",
    "vault_id",
    "institution",
    "record_id",
    "generated_at",
    "generated_by",
    "record",
    "data",
    "metadata",
    "consent",
    "retention",
    "grant",
    "salt",
)

#: What a subject report shows instead of another child's record id.
ANOTHER_RECORD = "another record"


def _commitment(report: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the RFC 8785 canonical JSON of the committed report keys."""
    core = {key: report[key] for key in _COMMITTED}
    return hashlib.sha256(bytes(rfc8785.dumps(core))).hexdigest()


def _about_digest(leaves: Iterable[bytes]) -> str:
    """SHA-256 (hex) of the concatenated leaf hashes of the entries about a record."""
    digest = hashlib.sha256()
    for leaf in leaves:
        digest.update(leaf)
    return digest.hexdigest()


def redacted_digest(items: Iterable[tuple[int, bytes]]) -> str:
    """SHA-256 (hex) binding the redacted texts of a report's entries to the log.

    The ``report.subject`` entry carries it (``redacted_digest``), so a
    redacted entry's shown content is what the vault logged at report time,
    not something added to the report afterwards.
    """
    digest = hashlib.sha256()
    for seq, text in items:
        digest.update(f"{seq}:{len(text)}:".encode("ascii") + text)
    return digest.hexdigest()


def _origin(vault_id: str) -> str:
    # Same text as vault._vault.log_origin; repeated here so the standalone
    # verifier does not import the facade.
    return f"childvault/{vault_id}"
