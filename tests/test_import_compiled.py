"""An import row's consent and column names worked out once (issue 18, third
round, session 6) equal the per-row, per-rule path they replaced.

- :class:`ImportConsents` against ``parse_consent_columns`` → ``check_consent``
  → ``check_backdating`` → the notice's digest, each copying the consent: the
  same consent, or the same refusal (English, zh_CN, the column named), first
  problem first; its memo of parsed cells changes nothing.
- The importer's renaming, worked out once per header, against the per-row
  renaming it replaced (kept below as the oracle).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, timedelta
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from childvault._i18n import Message, _t
from childvault.keys._errors import ValidationError
from childvault.vault import _importer
from childvault.vault._consent import (
    ALL_CONSENT_COLUMNS,
    Consent,
    ImportConsents,
    check_backdating,
    check_consent,
    parse_consent_columns,
)
from childvault.vault._schema import Schema

SCHEMA = Schema.default()
TODAY = date(2026, 11, 24)
WINDOW = 30
NOTICES = {"2026-1": "a" * 64, "2025-2": "b" * 64}


def _notice_sha256(version: str) -> str:
    if version not in NOTICES:
        raise ValidationError(
            _t("notice version {version!r} was never published", version=version),
            field="notice_version",
        )
    return NOTICES[version]


def _reference(
    row: Mapping[str, str], dob: date | None, confirmed: bool
) -> Consent:  # the per-rule path of _svc_records._validated, before
    consent = parse_consent_columns(row, default_notice="2026-1", today=TODAY)
    consent = check_consent(consent, date_of_birth=dob, schema=SCHEMA, today=TODAY)
    consent = check_backdating(
        consent,
        created=TODAY,
        window_days=WINDOW,
        actor="officer1",
        officer=confirmed,
        in_import=True,
    )
    return dataclasses.replace(consent, notice_sha256=_notice_sha256(consent.notice_version))


def _outcome(fn: Callable[[], object]) -> tuple[object, ...]:
    try:
        return ("ok", fn())
    except ValidationError as exc:
        message = exc.args[0]
        assert isinstance(message, Message)
        return ("error", str(message), message.in_locale("zh_CN"), exc.field)


_day = st.dates(min_value=date(1995, 1, 1), max_value=date(2040, 1, 1))
_cell = {
    "consent_by": st.sampled_from(["guardian", "child", "监护人", "本人", "Guardian ", "", "x"]),
    "consented_at": st.sampled_from(["", "2026-11-24", "2026-11-25", "2026-09-01", "bad"])
    | _day.map(date.isoformat),
    "notice_version": st.sampled_from(["", "2026-1", "2025-2", "2024-9", "bad version"]),
    "purposes": st.sampled_from(
        [
            "case_management",
            "case_management;statistics",
            "case_management；statistics",
            "case_management;case_management",
            "nope",
            "Bad Name",
            "",
            " ; ",
        ]
    ),
    "retain_until": st.sampled_from(["2034-01-01", "2026-11-24", "2020-01-01", "", "x"])
    | _day.map(date.isoformat),
    "guardian_informed": st.sampled_from(["", "yes", "no", "是", "maybe"]),
    "guardian_also": st.sampled_from(["", "yes", "否", "1", "maybe"]),
    "consent_party": st.sampled_from(["", "guardian", "child", "机构", "civil_affairs", "pet"]),
    "consent_relation": st.sampled_from(["", "母亲", "a\tb", "x" * 40]),
    "consent_form_sha256": st.sampled_from(["", "c" * 64, "C" * 64, "xyz"]),
}


@st.composite
def _consent_rows(draw: st.DrawFn) -> dict[str, str]:
    row = {"name": "张小明"}  # a field: not a consent column, ignored
    for column, values in _cell.items():
        if draw(st.integers(min_value=0, max_value=5)):
            row[column] = draw(values)
    return row


def _import_consents(actor: str, *, confirmed: bool) -> ImportConsents:
    """An import's consent checks as ``actor`` runs them today (notice 2026-1)."""
    return ImportConsents(
        schema=SCHEMA,
        default_notice="2026-1",
        today=TODAY,
        created=TODAY,
        window_days=WINDOW,
        actor=actor,
        confirmed=confirmed,
        notice_sha256=_notice_sha256,
    )


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(_consent_rows(), st.none() | _day, st.booleans())
@example(
    {"consent_by": "guardian", "purposes": "case_management", "retain_until": "2034-01-01"},
    date(2015, 3, 9),
    False,
)
@example(
    {
        "consent_by": "guardian",
        "consented_at": "2026-01-05",
        "purposes": "statistics",
        "retain_until": "2034-01-01",
        "consent_form_sha256": "c" * 64,
    },
    date(2015, 3, 9),
    True,
)
def test_import_consents_equal_the_per_rule_path(
    row: dict[str, str], dob: date | None, confirmed: bool
) -> None:
    consents = _import_consents("officer1", confirmed=confirmed)
    expected = _outcome(lambda: _reference(row, dob, confirmed))
    assert _outcome(lambda: consents.checked(consents.parse(row), dob)) == expected
    # Parsed again from the memo (a row with the same consent cells).
    assert _outcome(lambda: consents.checked(consents.parse(dict(row)), dob)) == expected


def test_parsing_reads_the_consent_columns_only() -> None:
    # The memo is keyed on ALL_CONSENT_COLUMNS: parsing must read nothing else.
    read: list[str] = []

    class Row(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            read.append(key)
            return super().get(key, default)

    row = Row(
        consent_by="guardian",
        purposes="case_management",
        retain_until="2034-01-01",
        name="张小明",
    )
    parse_consent_columns(row, default_notice="2026-1", today=TODAY)
    assert set(read) <= set(ALL_CONSENT_COLUMNS)
    assert set(read) == set(ALL_CONSENT_COLUMNS)


def test_the_memo_is_bounded() -> None:
    consents = _import_consents("worker1", confirmed=False)
    day = date(2027, 1, 1)
    for i in range(5000):
        until = (day + timedelta(days=i)).isoformat()
        parsed = consents.parse(
            {"consent_by": "guardian", "purposes": "statistics", "retain_until": until}
        )
        assert parsed.retain_until.isoformat() == until
    assert len(consents._parsed) <= 4096


# -- renaming once per header ---------------------------------------------------------------


def _reference_renamed(
    rows: Iterator[tuple[int, _importer.Row]],
    aliases: Mapping[str, str] | None,
    purposes: Sequence[str],
) -> Iterator[tuple[int, _importer.Row]]:  # the per-row renaming, before
    if not aliases and not purposes:
        yield from rows
        return
    for number, row in rows:
        if isinstance(row, _importer.BadRow):
            yield number, row
            continue
        renamed: dict[str, str] = {}
        clash = None
        for key, value in row.items():
            name = aliases.get(key, key) if aliases else key
            if name in renamed:
                clash = name
            if name == "purposes" and purposes:
                value = ";".join(_importer.purpose_names(value.split(";"), purposes))
            renamed[name] = value
        if clash is not None:
            yield (
                number,
                _importer.BadRow(
                    _t("column {name!r} is given twice (by name and label)", name=clash)
                ),
            )
        else:
            yield number, renamed


_ALIASES = _importer.column_aliases(SCHEMA.record_type("child"))
_COLUMNS = ["name", "姓名", "sex", "性别", "purposes", "用途", "同意用途", "consent_by", "同意人"]
_PURPOSE_CELLS = st.lists(
    st.sampled_from(["个案管理", "统计分析", "case_management", "未知", " 个案管理", ""]),
    max_size=3,
).map(";".join)


def _shown(rows: Iterator[tuple[int, _importer.Row]]) -> list[tuple[int, object]]:
    return [(n, ("bad", str(r.reason)) if isinstance(r, _importer.BadRow) else r) for n, r in rows]


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(st.sampled_from(_COLUMNS), min_size=1, max_size=5, unique=True),
    st.lists(st.lists(_PURPOSE_CELLS, min_size=5, max_size=5), max_size=4),
    st.booleans(),
    st.booleans(),
)
def test_renaming_once_per_file_equals_per_row(
    tmp_path: Path,
    header: list[str],
    cells: list[list[str]],
    with_aliases: bool,
    with_purposes: bool,
) -> None:
    aliases = _ALIASES if with_aliases else None
    purposes = SCHEMA.purposes if with_purposes else ()
    body = [row[: len(header)] for row in cells]
    source = tmp_path / "rows.csv"
    with source.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(body)
    lines = tmp_path / "rows.jsonl"
    lines.write_text(
        "".join(json.dumps(dict(zip(header, row, strict=True))) + "\n" for row in body),
        encoding="utf-8",
    )
    for path, reader in ((source, _importer._iter_csv), (lines, _importer._iter_jsonl)):
        got = _shown(_importer.iter_rows(path, aliases=aliases, purposes=purposes))
        want = _shown(_reference_renamed(reader(path), aliases, purposes))
        # Blank CSV rows (every cell empty) are skipped by both.
        assert got == want, path.suffix


def test_purpose_labels_are_not_ascii() -> None:
    # The renamer leaves an ASCII purposes cell unsplit only because no label is ASCII.
    assert not _importer._ASCII_LABELS


# -- the stored consent and metadata JSON -----------------------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


@given(st.dictionaries(st.text(max_size=8), _json_values, max_size=8))
def test_stored_json_is_json_dumps(obj: dict[str, object]) -> None:
    from childvault.vault._sql import _records

    assert _records._CONSENT_JSON(obj) == json.dumps(obj, sort_keys=True)
    assert _records._METADATA_JSON(obj) == json.dumps(obj, sort_keys=True, ensure_ascii=False)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(_consent_rows(), st.lists(st.none() | _day, min_size=1, max_size=6), st.booleans())
@example(
    {"consent_by": "guardian", "purposes": "case_management", "retain_until": "2034-01-01"},
    [date(2015, 3, 9), date(2026, 12, 1), None, date(2010, 1, 1)],
    False,
)
@example(
    {"consent_by": "child", "purposes": "case_management", "retain_until": "2034-01-01"},
    [date(2005, 3, 9), date(2015, 3, 9), None, date(2005, 3, 9)],
    False,
)
def test_rows_sharing_their_consent_cells_equal_the_per_rule_path(
    row: dict[str, str], dobs: list[date | None], confirmed: bool
) -> None:
    """Rows with the same consent cells and their own dates of birth (one import,
    issue 18 round 2 session 9: a consent that passed once is checked again only
    against the rules that read the date of birth): each row's consent or
    refusal is the per-rule path's."""
    consents = _import_consents("officer1", confirmed=confirmed)
    for dob in dobs:
        expected = _outcome(lambda: _reference(row, dob, confirmed))  # noqa: B023
        got = _outcome(lambda: consents.checked(consents.parse(dict(row)), dob))  # noqa: B023
        assert got == expected
