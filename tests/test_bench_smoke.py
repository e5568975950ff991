"""Keeps the benchmark harness working: every benchmark at a tiny size, no timing asserted.

``python -m bench`` (see docs/benchmarks.md) is the real run; here each
benchmark only has to produce finite, positive figures and the report has to
be written. The Vault benchmarks start their own OpenBao dev server and are
skipped without the ``bao`` binary.
"""

from __future__ import annotations

import math
from pathlib import Path

from childvault.keys._devserver import find_bao


def test_every_benchmark_runs_at_tiny_size(tmp_path: Path) -> None:
    from bench.__main__ import BENCHES, main, run_all
    from bench._common import TINY, Config

    chosen = list(BENCHES) if find_bao() else [b for b in BENCHES if "vault" not in b]
    if find_bao() is None:
        chosen.remove("approve_read")
    cfg = Config(workdir=tmp_path / "work", **TINY)  # type: ignore[arg-type]
    (tmp_path / "work").mkdir()
    results, failures = run_all(cfg, chosen, [])
    assert not failures, failures
    assert set(results) == set(chosen)
    for name, res in results.items():
        assert res.figures, name
        for fig in res.figures:
            assert fig.values, (name, fig.label)
            assert all(math.isfinite(v) and v > 0 for v in fig.values), (name, fig.label)
        for r in res.ratios:
            assert math.isfinite(r.value) and r.value > 0, (name, r.label)

    out = tmp_path / "report.md"
    assert main(["--tiny", "--only", "cli_help", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "cli_help" in text
