"""The compliance matrix (docs/compliance.md) cannot rot.

The matrix follows fixed conventions, and these tests enforce them:

- Every article of the 2019 Provisions (P-1 ... P-29) and of the 2025 Measures
  (M-1 ... M-18) has exactly one table row whose first cell is its label, and
  no row names an article that does not exist.
- An article row has five cells (:data:`COLUMNS`); the second is its
  coverage, one of the fixed phrases ``Software``, ``Partly`` or
  ``Outside software``.
- A row marked ``Outside software`` cites no test. Every other row cites at
  least one test.
- Tests are cited as ``tests/path.py::test_name`` (or
  ``tests/path.py::TestClass::test_name``); parametrised tests by their base
  name (a ``[id]`` suffix is tolerated and ignored). Every test cited anywhere
  in the document must exist: the file is parsed with ``ast`` and must define
  that function at module level (or that method in that class).
- The claims hold: :func:`test_cited_tests_pass` runs every test cited by a
  ``Software`` or ``Partly`` row (one pytest subprocess, results read from its
  JUnit XML) and requires that none fails and that every such row has at
  least one cited test that actually ran and passed. A row whose only tests
  are skipped (a missing OpenBao binary) or deselected (``slow``) therefore
  fails: it cannot pass vacuously.

Two further tests keep the notice template, on which the P-10 row relies,
honest: it names every P-10 item in both languages and offers refusal, and the
copy packaged as notice version 2026-1 is the documented one.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MATRIX = ROOT / "docs" / "compliance.md"
NOTICE_DOC = ROOT / "docs" / "notice-template.md"
NOTICE_PACKAGED = ROOT / "childvault" / "vault" / "data" / "notice-template.md"

#: Article labels the matrix must cover, each exactly once.
ARTICLES = [f"P-{n}" for n in range(1, 30)] + [f"M-{n}" for n in range(1, 19)]
#: The fixed coverage phrases (second cell of each article row).
SOFTWARE, PARTLY, OUTSIDE = "Software", "Partly", "Outside software"
COVERAGE = (SOFTWARE, PARTLY, OUTSIDE)
#: The columns of the two article tables.
COLUMNS = ("Article", "Coverage", "Requires", "What childvault does", "Tests")

LABEL = re.compile(r"[PM]-\d+")
#: A cited test: file, then one or two ``::`` parts, optionally a parameter id.
NODE = re.compile(r"\b(tests/[\w/]+\.py)((?:::\w+){1,2})(?:\[[^\]\s`]*\])?")


def _text() -> str:
    return MATRIX.read_text(encoding="utf-8")


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row (``| a | b |`` -> ``["a", "b"]``)."""
    inner = line.strip()
    inner = inner[1:] if inner.startswith("|") else inner
    inner = inner[:-1] if inner.endswith("|") else inner
    return [c.strip().strip("*").strip() for c in inner.split("|")]


def _article_rows() -> list[tuple[int, list[str]]]:
    """(line number, cells) of every table row whose first cell is an article label."""
    rows = []
    for number, line in enumerate(_text().splitlines(), start=1):
        if not line.lstrip().startswith("|"):
            continue
        cells = _cells(line)
        if cells and LABEL.fullmatch(cells[0]):
            rows.append((number, cells))
    return rows


def _cited(text: str) -> list[tuple[str, tuple[str, ...]]]:
    """(file, (name,) or (class, name)) of every test cited in ``text``."""
    return [(m.group(1), tuple(m.group(2).split("::")[1:])) for m in NODE.finditer(text)]


@functools.cache
def _defined(path: str) -> frozenset[tuple[str, ...]]:
    """Module-level test functions, and methods of module-level classes, of a file."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)
    names: set[tuple[str, ...]] = set()
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, functions):
            names.add((node.name,))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, functions):
                    names.add((node.name, item.name))
    return frozenset(names)


def test_every_cited_test_exists() -> None:
    cited = _cited(_text())
    assert len(cited) >= 50, "the matrix cites almost no tests: is the citation format intact?"
    missing = []
    for path, parts in cited:
        node = f"{path}::{'::'.join(parts)}"
        if not (ROOT / path).is_file():
            missing.append(f"{node} (no such file)")
        elif not parts[-1].startswith("test") or parts not in _defined(path):
            missing.append(node)
    assert not missing, "docs/compliance.md cites tests that do not exist:\n" + "\n".join(
        sorted(set(missing))
    )


def test_every_tests_cell_holds_only_citations() -> None:
    """Each item of a Tests cell is one citation in the checked form (or the dash
    of an ``Outside software`` row): a misspelt one (``test/...``, a missing
    ``::``, a stray word) would otherwise escape :func:`test_every_cited_test_exists`,
    which only sees what matches the citation pattern."""
    problems = []
    for number, cells in _article_rows():
        if len(cells) != len(COLUMNS):
            continue  # reported by test_every_row_names_a_test_or_is_outside_software
        cell = cells[COLUMNS.index("Tests")]
        if cell in ("—", ""):
            continue
        for item in (part.strip() for part in cell.split("<br>")):
            code = item[1:-1] if item.startswith("`") and item.endswith("`") else None
            if code is None or "`" in code or NODE.fullmatch(code) is None:
                problems.append(f"line {number} ({cells[0]}): {item!r} is not a test citation")
    assert not problems, "\n".join(problems)


def test_every_article_has_exactly_one_row() -> None:
    labels = [cells[0] for _, cells in _article_rows()]
    unknown = sorted(set(labels) - set(ARTICLES))
    assert not unknown, f"rows for articles that do not exist: {unknown}"
    missing = [a for a in ARTICLES if a not in labels]
    assert not missing, f"articles without a row: {missing}"
    repeated = sorted({a for a in labels if labels.count(a) > 1})
    assert not repeated, f"articles with more than one row: {repeated}"


def test_every_row_names_a_test_or_is_outside_software() -> None:
    problems = []
    for number, cells in _article_rows():
        label = cells[0]
        if len(cells) != len(COLUMNS):
            problems.append(f"line {number} ({label}): {len(cells)} cells, not {len(COLUMNS)}")
            continue
        coverage = cells[1]
        tests = _cited(cells[COLUMNS.index("Tests")])
        if coverage not in COVERAGE:
            problems.append(f"line {number} ({label}): coverage {coverage!r} not in {COVERAGE}")
        elif coverage == OUTSIDE and tests:
            problems.append(f"line {number} ({label}): outside software but cites tests")
        elif coverage != OUTSIDE and not tests:
            problems.append(f"line {number} ({label}): {coverage} but names no test")
    assert not problems, "\n".join(problems)


def _node_id(path: str, parts: tuple[str, ...]) -> str:
    return f"{path}::{'::'.join(parts)}"


def _junit_outcomes(report: Path) -> dict[str, list[str]]:
    """Base node id -> outcomes (passed, failed, skipped) of each of its test cases."""
    outcomes: dict[str, list[str]] = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        classname, name = case.get("classname", ""), case.get("name", "")
        module, _, klass = classname.partition(".Test")
        path = module.replace(".", "/") + ".py"
        parts = ((f"Test{klass}",) if klass else ()) + (name.split("[", 1)[0],)
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        outcomes.setdefault(_node_id(path, parts), []).append(outcome)
    return outcomes


def test_cited_tests_pass(tmp_path: Path) -> None:
    """Every Software/Partly row names at least one test that runs and passes; none fails."""
    rows = [
        (cells[0], [_node_id(p, parts) for p, parts in _cited(cells[COLUMNS.index("Tests")])])
        for _, cells in _article_rows()
        if len(cells) == len(COLUMNS) and cells[1] in (SOFTWARE, PARTLY)
    ]
    nodes = sorted({node for _, cited in rows for node in cited})
    me = f"tests/test_compliance.py::{test_cited_tests_pass.__name__}"
    assert me not in nodes, "the matrix must not cite the test that runs its citations"
    report = tmp_path / "cited.xml"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    subprocess.run(
        [*command, f"--junitxml={report}", *nodes],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    outcomes = _junit_outcomes(report)
    failed = sorted(n for n in nodes if "failed" in outcomes.get(n, ()))
    assert not failed, "tests cited by docs/compliance.md fail:\n" + "\n".join(failed)
    vacuous = [
        label for label, cited in rows if not any("passed" in outcomes.get(n, ()) for n in cited)
    ]
    assert not vacuous, f"rows none of whose cited tests ran and passed: {vacuous}"


# ----------------------------------------------------------------- the notice (P-10)

_P10_ZH = ["一", "二", "三", "四", "五", "六", "七"]


def test_notice_template_covers_every_p10_item() -> None:
    text = NOTICE_DOC.read_text(encoding="utf-8")
    for n, zh in enumerate(_P10_ZH, start=1):
        assert f"P-10 第{zh}项" in text, f"the Chinese notice does not cover P-10 item {n}"
        assert f"P-10 item {n}" in text, f"the English notice does not cover P-10 item {n}"
    # The refusal option must be offered with the request for consent (P-10).
    assert "我拒绝以上全部用途" in text and "I refuse all of the above" in text
    # Who consents (P-9, M-12), in both languages.
    assert "年满十四周岁" in text and "14 or older" in text


def test_packaged_notice_is_the_documented_template() -> None:
    """A new vault registers the SHA-256 of the packaged copy as version 2026-1."""
    assert NOTICE_PACKAGED.read_bytes() == NOTICE_DOC.read_bytes()
