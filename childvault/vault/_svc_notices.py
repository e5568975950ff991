"""Notices: the register of published privacy notices (P-10)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from childvault.keys import IntegrityError, UsageError, ValidationError
from childvault.vault import _audit
from childvault.vault._audit import Event
from childvault.vault._session import Session
from childvault.vault._time import iso


class NoticeService:
    """Publish notices and look up their hashes."""

    def __init__(self, session: Session) -> None:
        self.s = session

    def notices(self) -> dict[str, dict[str, str]]:
        """The register of published notices: version -> sha256, date, publisher."""
        raw = self.s.db.meta.get("notices") or "{}"
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise IntegrityError("the notice register in the database is damaged") from exc
        return {str(k): dict(v) for k, v in doc.items()}

    def notice_sha256(self, version: str) -> str:
        """The SHA-256 of a published notice version; refuse an unpublished one."""
        entry = self.notices().get(version)
        if entry is None:
            raise ValidationError(
                f"notice version {version!r} was never published in this vault: publish it "
                "with `childvault notice publish` (admin) or use "
                f"{self.s.setting('notice_version')!r}",
                field="notice_version",
            )
        return str(entry["sha256"])

    def publish_notice(
        self, version: str, text: bytes, *, now: datetime | None = None
    ) -> dict[str, str]:
        """Admin: register a notice text (P-10) and make it the current version.

        Records consented under another version need fresh consent before an
        approval (``consent renew``). Publishing is logged with the text's hash.
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "notice.publish", moment, "publishing notices")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", version):
            raise UsageError("--version: 1-32 letters, digits, '.', '_' or '-'")
        if not text.strip():
            raise UsageError("the notice file is empty")
        digest = hashlib.sha256(text).hexdigest()
        register = self.notices()
        if version in register and register[version]["sha256"] != digest:
            raise UsageError(
                f"notice version {version!r} was already published with other text: "
                "a changed text needs a new version"
            )
        register[version] = {"sha256": digest, "published_at": iso(moment), "by": self.s.user}
        with self.s.db.transaction():
            self.s.db.meta.set("notices", json.dumps(register, sort_keys=True))
            self.s.db.meta.set("notice_version", version)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user, "notice.publish", detail={"version": version, "sha256": digest}
                    )
                ],
                moment,
            )
        return {"version": version, "sha256": digest}


def packaged_notice_sha256() -> str:
    """SHA-256 of the notice template shipped as version 2026-1 (docs/notice-template.md)."""
    from importlib import resources

    data = resources.files("childvault.vault").joinpath("data/notice-template.md").read_bytes()
    return hashlib.sha256(data).hexdigest()
