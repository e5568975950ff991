"""A notice text that passes the P-10 checks of ``notice publish`` (for tests)."""

from __future__ import annotations

import re
from importlib import resources


def filled_notice(tag: str = "") -> bytes:
    """The packaged template with every placeholder filled in (``tag`` varies the text)."""
    template = (
        resources.files("childvault.vault").joinpath("data/notice-template.md").read_text("utf-8")
    )
    filled = re.sub(r"【[^】]*】", "测试福利院 010-12345678", template)
    return (filled + (f"\n{tag}\n" if tag else "")).encode("utf-8")
