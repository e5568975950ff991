"""Markdown rendering of a benchmark run (``docs/benchmarks.md``)."""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from bench._common import Config, Figure, Result

_TARGETS = {
    "local_import": "at least 5,000 records/s and at least 0.5 x peer (a)",
    "vault_import": "at least 0.8 x floor (a) and at least 5 x peer (b)",
    "approve_read": "at most 1.5 x the hvac floor (Vault)",
    "audit_verify": "at least 0.5 x the bare chain",
    "cli_help": "none since the third round (replaced by cli_session)",
    "cli_session": "at most 0.3 s for a command on an unlocked session",
    "memory": "constant: the two peaks within 20%",
    "find_index": "within 2 x of each other",
}
_NOTES = Path(__file__).with_name("NOTES.md")


def _num(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _fig_row(f: Figure) -> str:
    return (
        f"| {f.label} | **{_num(f.median)}** | {_num(f.lo)} | {_num(f.hi)} | {f.unit} "
        f"| {len(f.values)} |"
    )


def summary(results: dict[str, Result]) -> list[str]:
    """The one-table view: every ratio with its target and verdict."""
    out = [
        "| benchmark | comparison (same run) | ratio (median) | per-repetition range "
        "| target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for r in res.ratios:
            rng = f"{min(r.per_rep):.2f} - {max(r.per_rep):.2f}" if r.per_rep else "-"
            met = "-" if r.met is None else ("**yes**" if r.met else "**no**")
            out.append(f"| {name} | {r.label} | {r.value:.2f} | {rng} | {r.target} | {met} |")
    return out


def render(
    *,
    cfg: Config,
    results: dict[str, Result],
    failures: dict[str, str],
    machine: dict[str, str],
    command: str,
    product: str,
    when: datetime,
    title: str | None,
    includes: list[Path] = (),  # type: ignore[assignment]
) -> str:
    lines: list[str] = [f"# {title or 'Benchmarks'}", ""]
    lines += [
        "Written by `python -m bench` (see `bench/__main__.py`); every figure below comes from",
        "the run described here. Do not edit by hand: re-run the command.",
        "",
        f"- date (UTC): {when:%Y-%m-%d %H:%M}",
        f"- command: `{command}` (preset **{cfg.name}**)",
        f"- product measured: `{product}`",
        "- machine and versions:",
        "",
        "| | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine.items()),
        "",
        "Each figure is the median of the repetitions shown, with min and max; each ratio",
        "is computed from figures of the same run (contenders interleaved repetition by",
        "repetition). The machine is shared (2 cores, other jobs running): the load average",
        "recorded with each benchmark says how busy it was.",
        "",
        "## Summary",
        "",
        *summary(results),
        "",
    ]
    if failures:
        lines += ["## Failed benchmarks", ""]
        for name, tb in failures.items():
            lines += [f"### {name}", "", "```", tb.strip()[-3000:], "```", ""]
    sizes = {k: v for k, v in vars(cfg).items() if k not in {"name", "workdir"}}
    lines += [
        "## Sizes of this run",
        "",
        ", ".join(f"`{k}` = {v}" for k, v in sizes.items()),
        "",
        "## Results",
        "",
    ]
    import importlib

    for name, res in results.items():
        mod = importlib.import_module(f"bench.{name}")
        doc = (mod.__doc__ or "").strip()
        lines += [f"### {name}", "", f"Target: {_TARGETS.get(name, '-')}.", ""]
        if doc:
            lines += [doc, ""]
        lines += [
            "| figure | median | min | max | unit | runs |",
            "|---|---|---|---|---|---|",
            *(_fig_row(f) for f in res.figures),
            "",
        ]
        for r in res.ratios:
            met = "-" if r.met is None else ("met" if r.met else "NOT met")
            lines.append(f"- {r.label}: **{r.value:.2f}** (target {r.target}: {met})")
        for note in res.notes:
            lines.append(f"- {note}")
        lines.append("")
    for path in includes:
        # An earlier run's report, one heading level down.
        for line in path.read_text(encoding="utf-8").strip().splitlines():
            lines.append("#" + line if line.startswith("#") else line)
        lines.append("")
    if _NOTES.exists():
        lines += [_NOTES.read_text(encoding="utf-8").strip(), ""]
    return "\n".join(lines)
