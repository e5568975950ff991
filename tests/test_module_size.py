"""No module is over 800 lines (issue 11's "Done when"): the package's, the
tests' and the benchmarks'.

A module past that size has usually grown a second responsibility; the limit
makes the next change split it rather than add to it. Counted as ``wc -l``
counts (newlines), over every ``.py`` file of the package and, in a source
checkout, of ``tests/`` and ``bench/``.
"""

from __future__ import annotations

from pathlib import Path

import childvault

ROOT = Path(childvault.__file__).parent
#: The checkout these tests run from (tests/ and bench/ are not installed).
CHECKOUT = Path(__file__).resolve().parents[1]
LIMIT = 800


def _sizes() -> dict[str, int]:
    folders = [(ROOT, ROOT.parent)] + [
        (CHECKOUT / name, CHECKOUT) for name in ("tests", "bench") if (CHECKOUT / name).is_dir()
    ]
    return {
        str(path.relative_to(base)): path.read_bytes().count(b"\n")
        for folder, base in folders
        for path in sorted(folder.rglob("*.py"))
    }


def test_every_module_is_counted() -> None:
    # Guards the walk itself: an empty or partial listing would make the next test vacuous.
    sizes = _sizes()
    assert "childvault/vault/_facade.py" in sizes
    assert "childvault/server/_routes.py" in sizes
    assert "tests/test_module_size.py" in sizes
    assert "bench/scale.py" in sizes
    assert len(sizes) > 100


def test_no_module_is_over_the_limit() -> None:
    over = {name: lines for name, lines in _sizes().items() if lines > LIMIT}
    assert not over, f"modules over {LIMIT} lines (split by responsibility): {over}"
