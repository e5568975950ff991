"""The documentation cannot rot: its example runs, its commands match CI, its links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MARK = "<!-- example: library-flow -->"
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
# [text](target) — inline links and images; the target stops at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _read(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def _without_code(text: str) -> str:
    """Markdown with fenced blocks and inline code removed (links there are not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def _section(text: str, heading_prefix: str) -> str:
    """The body of the first ``## `` section whose title starts with ``heading_prefix``."""
    match = re.search(
        rf"^## {re.escape(heading_prefix)}.*?$(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL
    )
    assert match, f"no section '## {heading_prefix}...'"
    return match.group(1)


def _example() -> str:
    text = _read("docs/library.md")
    assert text.count(EXAMPLE_MARK) == 1, f"docs/library.md must mark one {EXAMPLE_MARK}"
    after = text.split(EXAMPLE_MARK, 1)[1]
    match = FENCE.search(after)
    assert match and match.group(1) == "python", "the marked block must be a ```python block"
    assert after[: match.start()].strip() == "", "the fence must follow the marker directly"
    return match.group(2)


def test_library_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code = compile(_example(), "docs/library.md:library-flow", "exec")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the example's temporary directory goes here
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    exec(code, {"__name__": "__docs_example__"})


def test_readme_try_it_has_two_sh_blocks() -> None:
    section = _section(_read("README.md"), "Try it")
    blocks = list(FENCE.finditer(section))
    assert [m.group(1) for m in blocks] == ["sh", "sh"], "'Try it' must hold exactly two sh blocks"
    for block in blocks:
        assert len(block.group(2).strip().splitlines()) == 1, "each command is one line"


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    section = _section(_read("README.md"), "Try it")
    commands = [m.group(2).strip() for m in FENCE.finditer(section) if m.group(1) == "sh"]
    test_command = next((c for c in commands if "pytest" in c), None)
    assert test_command, "the README's 'Try it' section has no pytest command"
    ci = _read(".ci/run")
    lines = [line.strip() for line in ci.splitlines()]
    assert test_command in lines, f".ci/run does not run this line verbatim: {test_command}"


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    missing, outside = [], []
    for target in LINK.findall(_without_code(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL, mailto: or an anchor in the same file
        resolved = (path.parent / target.split("#", 1)[0]).resolve()
        if not resolved.is_relative_to(ROOT.resolve()):
            # Issue 18: a reader of a copy (a wheel's sdist, a fork) has only the
            # repository; a link beside it (the design document) would dangle.
            outside.append(target)
        elif not resolved.exists():
            missing.append(target)
    assert not outside, f"{path.relative_to(ROOT)} links outside the repository: {outside}"
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"
