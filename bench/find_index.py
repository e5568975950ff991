"""``find`` by blind index at two vault sizes (the lookup must not grow with the vault).

State: a local-provider vault filled with :func:`bench._raw.fill_records` —
synthetic ``records`` rows (bookkeeping only) and one ``id_number`` blind-index
row each, whose tags are computed by the product (``Vault.index_tags``) from
invented identity numbers. The measured call is the product's
``Vault.find("id_number", value)`` as a staff user: validate the value, compute
its tag, look it up, append and commit the ``record.find`` log entry (an fsync,
``synchronous = FULL``). Each figure is the median latency of
``cfg.find_lookups`` lookups of values known to be present.
"""

from __future__ import annotations

import random
import time

from bench._common import Config, Figure, Result, Template, build_template, loadavg, ratio
from bench._raw import fill_records, synthetic_id_number

NAME = "find_index"


def _lookups(v: object, total: int, count: int) -> list[float]:
    rng = random.Random(total)
    out = []
    for _ in range(count):
        value = synthetic_id_number(rng.randrange(total))
        t0 = time.perf_counter()
        found = v.find("id_number", value)  # type: ignore[attr-defined]
        out.append((time.perf_counter() - t0) * 1000)
        assert found, value
    return out


def run(cfg: Config, tpl: Template | None = None) -> Result:
    work = cfg.workdir / NAME
    work.mkdir(parents=True, exist_ok=True)
    if tpl is None:
        tpl = build_template(work / "template" / "home")
    small, large = cfg.find_sizes
    figures = []
    loads = []
    for size in (small, large):
        home = tpl.copy(work / f"home-{size}")
        with tpl.open(home, "worker1") as v:
            fill_records(
                home, tpl.ids["worker1"], size, lambda vals, v=v: v.index_tags("id_number", vals)
            )
            _lookups(v, size, min(5, cfg.find_lookups))  # warm the page cache
            times = _lookups(v, size, cfg.find_lookups)
        figures.append(
            Figure(
                NAME, f"find by blind index, {size:,} records", "ms", times, higher_is_better=False
            )
        )
        loads.append(loadavg())
    res = Result(figures)
    res.ratios.append(
        ratio(NAME, f"find at {large:,} / at {small:,}", figures[1], figures[0], at_most=2.0)
    )
    res.notes.append(f"load average after each size: {' | '.join(loads)}")
    return res
