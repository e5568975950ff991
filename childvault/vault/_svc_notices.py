"""Notices: the register of published privacy notices (P-10)."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from childvault._i18n import Message, _t, join
from childvault.keys import UsageError, ValidationError
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
        # Checked against the signed notice.publish entries before use (docs/trust.md).
        return self.s.verified_notices()[0]

    def accepted_versions(self) -> frozenset[str]:
        """Notice versions whose consents are still valid: the current one, and the
        versions it continues through a chain of non-substantive changes."""
        register = self.notices()
        version = self.s.setting("notice_version")
        accepted = {version}
        while True:
            entry = register.get(version, {})
            nxt = entry.get("continues")
            if not entry.get("non_substantive") or not isinstance(nxt, str) or nxt in accepted:
                return frozenset(accepted)
            accepted.add(nxt)
            version = nxt

    def notice_sha256(self, version: str) -> str:
        """The SHA-256 of a published notice version; refuse an unpublished one."""
        entry = self.notices().get(version)
        if entry is None:
            raise ValidationError(
                _t(
                    "notice version {version!r} was never published in this vault: publish it "
                    "with `childvault notice publish` (admin) or use "
                    "{default!r}",
                    version=version,
                    default=self.s.setting("notice_version"),
                ),
                field="notice_version",
            )
        return str(entry["sha256"])

    def publish_notice(
        self,
        version: str,
        text: bytes,
        *,
        now: datetime | None = None,
        non_substantive: bool = False,
    ) -> dict[str, str]:
        """Admin: register a notice text (P-10) and make it the current version.

        Records consented under another version need fresh consent before an
        approval (``consent renew``), unless every version published since is
        marked ``non_substantive`` (a correction that changes no P-10 item: no
        re-consent, P-10 last paragraph). A new text must carry every P-10
        item, the refusal option and the responsible person's contact, with no
        template placeholder left (:func:`notice_problems`); re-publishing a
        registered text makes it current again. Publishing is logged with the
        text's hash.
        """
        moment = self.s.now(now)
        self.s.require(("admin",), "notice.publish", moment, _t("publishing notices"))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", version):
            raise UsageError(_t("--version: 1-32 letters, digits, '.', '_' or '-'"))
        if not text.strip():
            raise UsageError(_t("the notice file is empty"))
        digest = hashlib.sha256(text).hexdigest()
        register = self.notices()
        if version in register and register[version]["sha256"] != digest:
            raise UsageError(
                _t(
                    "notice version {version!r} was already published with other text: "
                    "a changed text needs a new version",
                    version=version,
                )
            )
        previous = self.s.setting("notice_version")
        if version not in register:
            problems = notice_problems(text)
            if problems:
                raise UsageError(
                    _t(
                        "the notice does not meet P-10 (sections named in "
                        "docs/notice-template.md): {problems}",
                        problems=join("; ", problems),
                    )
                )
        entry: dict[str, object] = {
            "sha256": digest,
            "published_at": iso(moment),
            "by": self.s.user,
        }
        if non_substantive and version not in register and previous != version:
            entry.update(non_substantive=True, continues=previous)
        elif version in register:
            entry = dict(register[version])
        register[version] = entry  # type: ignore[assignment]
        with self.s.db.transaction():
            self.s.db.meta.set("notices", json.dumps(register, sort_keys=True))
            self.s.db.meta.set("notice_version", version)
            _audit.append(
                self.s.db.audit,
                [
                    Event(
                        self.s.user,
                        "notice.publish",
                        detail={
                            "version": version,
                            "sha256": digest,
                            **({"non_substantive": True} if entry.get("non_substantive") else {}),
                        },
                    )
                ],
                moment,
            )
        return {"version": version, "sha256": digest}


#: P-10 items as the template's headings name them (docs/notice-template.md).
_P10_ZH = ("一", "二", "三", "四", "五", "六", "七")
_PHONE_OR_MAIL = re.compile(
    r"(?<!\d)(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8}|12377)(?!\d)|[\w.+-]+@[\w-]+\.[\w.-]+"
)


def notice_problems(text: bytes) -> list[Message]:
    """What a notice text lacks of P-10 (empty if nothing): issue 15 finding 6.

    Each of the seven P-10 items must be a section named as in the template
    (``P-10 第一项`` ... or ``P-10 item 1`` ...); the refusal option must be
    offered (``我拒绝`` / ``I refuse``); the responsible person's contact (a
    phone number or an e-mail address) must be given; no template placeholder
    (``【…】``) may be left.
    """
    try:
        body = text.decode("utf-8")
    except UnicodeDecodeError:
        return [_t("not UTF-8 text")]
    problems = [
        _t("P-10 item {n} (P-10 第{zh}项) is not named", n=n, zh=zh)
        for n, zh in enumerate(_P10_ZH, start=1)
        if f"P-10 第{zh}项" not in body and f"P-10 item {n}" not in body
    ]
    if "我拒绝" not in body and "I refuse" not in body:
        problems.append(_t("no refusal option (我拒绝 / I refuse)"))
    if "负责人" not in body and "responsible" not in body.lower():
        problems.append(_t("no responsible person (负责人 / responsible person) is named"))
    contacts = [m for m in _PHONE_OR_MAIL.findall(body) if m != "12377"]
    if not contacts:
        problems.append(_t("no contact of the responsible person (a phone number or e-mail)"))
    if "【" in body:
        problems.append(_t("template placeholders (【…】) are left unfilled"))
    return problems


def packaged_notice_sha256() -> str:
    """SHA-256 of the notice template shipped as version 2026-1 (docs/notice-template.md)."""
    from importlib import resources

    data = resources.files("childvault.vault").joinpath("data/notice-template.md").read_bytes()
    return hashlib.sha256(data).hexdigest()
