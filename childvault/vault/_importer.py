"""Streaming readers for import files (CSV and JSON Lines).

Both yield ``(row_number, {column: text})`` one row at a time, so memory does
not grow with the file. Rows are numbered from 1 (the first data row; a CSV
header is not counted). A malformed row is yielded as a :class:`BadRow` so the
caller can report it with its number and go on; a file-level problem (no
header, unknown columns, not a CSV at all) raises :class:`ImportFailed`.

Files are UTF-8 unless told otherwise (a UTF-8 byte-order mark is dropped);
GBK and GB18030, what Excel and WPS save on Chinese Windows, are accepted with
``encoding=``. Column names may be the schema's Chinese labels (``姓名`` for
``name``, the part of a field's description before `` / ``) and the consent
columns' Chinese names (:data:`CONSENT_LABELS`); purposes may be given by their
Chinese labels (:data:`PURPOSE_LABELS`).
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from childvault._i18n import DEFAULT_LOCALE, Message, _t, environment_locale, join, normalize_locale
from childvault.keys import ImportFailed, IntegrityError, UsageError

if TYPE_CHECKING:
    from childvault.vault._schema_types import RecordType

#: Largest accepted cell / line: a 2 MiB photo in base64 plus slack.
MAX_CELL = 4 << 20
MAX_COLUMNS = 256

#: Accepted ``encoding`` names and the codec each means (GB2312 and CP936 are GBK).
ENCODINGS = {
    "utf-8": "utf-8",
    "utf8": "utf-8",
    "gbk": "gbk",
    "gb2312": "gbk",
    "cp936": "gbk",
    "gb18030": "gb18030",
}

#: Chinese names of the consent columns (CONSENT_COLUMNS), accepted as CSV headers.
CONSENT_LABELS = {
    "同意人": "consent_by",
    "同意日期": "consented_at",
    "告知书版本": "notice_version",
    "用途": "purposes",
    "同意用途": "purposes",
    "保存期限": "retain_until",
    "保存至": "retain_until",
    "已告知监护人": "guardian_informed",
    "监护人同时同意": "guardian_also",
    # Issue 15: who consented, and the signed form's digest.
    "同意方": "consent_party",
    "同意监护人关系": "consent_relation",
    "同意书摘要": "consent_form_sha256",
}

#: Chinese labels of the purposes of the packaged schema (schemas/child.toml comments).
PURPOSE_LABELS = {
    "个案管理": "case_management",
    "社会救助": "social_assistance",
    "教育资助": "education_support",
    "医疗救治": "medical_care",
    "法律保护": "legal_protection",
    "统计分析": "statistics",
}


def field_label(description: str) -> str | None:
    """A field's Chinese label: its description before `` / `` (``姓名 / Full name``)."""
    label, sep, _rest = description.partition(" / ")
    label = label.strip()
    return label if sep and label else None


def column_aliases(rtype: RecordType) -> dict[str, str]:
    """Other accepted column names of ``rtype``'s import format: label -> field or column."""
    aliases = dict(CONSENT_LABELS)
    for name, spec in rtype.fields.items():
        label = field_label(spec.description)
        if label and label not in rtype.fields:
            aliases[label] = name
    return aliases


def purpose_names(values: Iterable[str], known: Sequence[str]) -> list[str]:
    """Purposes given by name or by Chinese label, as names (unknown ones unchanged)."""
    return [
        PURPOSE_LABELS[v] if v not in known and PURPOSE_LABELS.get(v) in known else v
        for v in values
    ]


def codec(encoding: str | None) -> str:
    """The codec for an ``encoding`` option (None: UTF-8); a usage error names the choices."""
    name = (encoding or "utf-8").strip().lower().replace("_", "-")
    if name not in ENCODINGS:
        raise UsageError(_t("unknown encoding {name!r}: use utf-8, gbk or gb18030", name=encoding))
    return ENCODINGS[name]


@dataclass(frozen=True)
class BadRow:
    """A row that could not even be parsed into columns."""

    reason: str


Row = dict[str, str] | BadRow


def file_digest(path: Path) -> str:
    """Hex SHA-256 of the file's bytes: the identity of an import source for resuming."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            # A device, FIFO or directory (``/dev/zero``) would never end: refused.
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ImportFailed(
                    _t("{path} is not a regular file; import a saved CSV or JSONL file", path=path)
                )
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise ImportFailed(_t("cannot read {path}: {why}", path=path, why=exc.strerror)) from exc
    return digest.hexdigest()


def detect_format(path: Path) -> str:
    """``"jsonl"`` for ``.jsonl``/``.ndjson`` files, else ``"csv"``."""
    return "jsonl" if path.suffix.lower() in {".jsonl", ".ndjson"} else "csv"


def iter_rows(
    path: Path,
    fmt: str | None = None,
    *,
    encoding: str | None = None,
    aliases: Mapping[str, str] | None = None,
    purposes: Sequence[str] = (),
) -> Iterator[tuple[int, Row]]:
    """Yield ``(row number, row)`` from a CSV or JSON Lines file.

    ``encoding``: ``utf-8`` (default), ``gbk`` or ``gb18030``. ``aliases`` maps
    other accepted column names (Chinese labels) to the field or column name;
    with ``purposes`` (the schema's), purposes given by Chinese label become names.
    """
    fmt = fmt or detect_format(path)
    # utf-8-sig: spreadsheets exported on Windows start with a BOM (dropped if there).
    name = codec(encoding)
    text_codec = "utf-8-sig" if name == "utf-8" else name
    renamer = _Renamer(aliases or {}, purposes) if aliases or purposes else None
    if fmt == "jsonl":
        return _renamed(_iter_jsonl(path, name), renamer)
    if fmt == "csv":
        return _iter_csv(path, text_codec, renamer)
    raise ImportFailed(_t("unknown import format {fmt!r}: use csv or jsonl", fmt=fmt))


#: Whether a purpose label is plain ASCII: if none is, an ASCII purposes cell
#: holds no label and is left as it is without being split.
_ASCII_LABELS = any(label.isascii() for label in PURPOSE_LABELS)

#: A header's renaming: the names its columns stand for, the name given twice
#: (None if none), and the position of the purposes column (-1: none to map).
_Plan = tuple[tuple[str, ...], str | None, int]


class _Renamer:
    """Aliased column names replaced by the names they stand for, and purposes given
    by Chinese label by their names.

    The renaming depends on the header only, so it is worked out once per
    header (once per file for CSV; once per distinct set of keys for JSON
    Lines), not once a row.
    """

    def __init__(self, aliases: Mapping[str, str], purposes: Sequence[str]) -> None:
        """``aliases``: other column name -> name; ``purposes``: the schema's."""
        self._aliases = aliases
        self._purposes = purposes
        self._plans: dict[tuple[str, ...], _Plan] = {}

    def plan(self, header: tuple[str, ...]) -> _Plan:
        """The renaming of rows with these columns, in this order."""
        found = self._plans.get(header)
        if found is not None:
            return found
        names: list[str] = []
        clash = None
        for column in header:
            name = self._aliases.get(column, column)
            if name in names:
                clash = name
            names.append(name)
        where = names.index("purposes") if self._purposes and "purposes" in names else -1
        found = (tuple(names), clash, where)
        if len(self._plans) < 64:  # JSON Lines rows may each have other keys
            self._plans[header] = found
        return found

    def row(self, plan: _Plan, cells: Sequence[str]) -> Row:
        """One row's cells (in its header's order) under ``plan``'s names."""
        names, clash, where = plan
        if clash is not None:
            return BadRow(_t("column {name!r} is given twice (by name and label)", name=clash))
        row = dict(zip(names, cells, strict=True))
        if where >= 0:
            value = cells[where]
            if _ASCII_LABELS or not value.isascii():
                row["purposes"] = ";".join(purpose_names(value.split(";"), self._purposes))
        return row


def _renamed(
    rows: Iterator[tuple[int, Row]], renamer: _Renamer | None
) -> Iterator[tuple[int, Row]]:
    """JSON Lines rows through ``renamer`` (:class:`_Renamer`), keys as they come."""
    if renamer is None:
        yield from rows
        return
    for number, row in rows:
        if isinstance(row, BadRow):
            yield number, row
        else:
            yield number, renamer.row(renamer.plan(tuple(row)), list(row.values()))


def _iter_csv(
    path: Path, encoding: str = "utf-8-sig", renamer: _Renamer | None = None
) -> Iterator[tuple[int, Row]]:
    csv.field_size_limit(MAX_CELL)
    try:
        fh = path.open("r", encoding=encoding, errors="strict", newline="")
    except OSError as exc:
        raise ImportFailed(_t("cannot read {path}: {why}", path=path, why=exc.strerror)) from exc
    with fh:
        reader = csv.reader(fh, strict=True)
        try:
            header = next(reader)
        except StopIteration as exc:
            raise ImportFailed(
                _t("{path} is empty: expected a header row of field names", path=path)
            ) from exc
        except UnicodeDecodeError as exc:
            raise _undecodable(path, encoding) from exc
        except csv.Error as exc:
            raise ImportFailed(_t("{path}: the header row is not valid CSV", path=path)) from exc
        header = [h.strip() for h in header]
        if len(header) > MAX_COLUMNS:
            raise ImportFailed(
                _t(
                    "{path}: {n} columns is more than any schema allows",
                    path=path,
                    n=len(header),
                )
            )
        if len(set(header)) != len(header) or any(not h for h in header):
            raise ImportFailed(
                _t("{path}: the header has empty or repeated column names", path=path)
            )
        # The header's renaming, once for the file (not once a row).
        rename = (
            None if renamer is None else functools.partial(renamer.row, renamer.plan(tuple(header)))
        )
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                # The decoder cannot resynchronise reliably: stop the file here.
                raise _undecodable(path, encoding) from exc
            except csv.Error as exc:
                yield number, BadRow(_t("malformed CSV ({why})", why=_csv_reason(exc)))
                continue
            if not any(c.strip() for c in cells):
                number -= 1  # blank lines are not rows
                continue
            if len(cells) != len(header):
                yield (
                    number,
                    BadRow(
                        _t(
                            "has {cells} cells, the header has {columns}",
                            cells=len(cells),
                            columns=len(header),
                        )
                    ),
                )
                continue
            yield number, dict(zip(header, cells, strict=True)) if rename is None else rename(cells)


def _undecodable(path: Path, encoding: str) -> ImportFailed:
    """The error for a file not in ``encoding``, naming the line of the first bad byte.

    The text decoder reads ahead in 8 KiB blocks, so the row being parsed when
    it fails is not where the bad byte is: find it again, in bounded chunks.
    A file that is not UTF-8 is most often GBK (Excel's and WPS's default on
    Chinese Windows): the message says how to import it as it is.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    line = 1
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 16):
                carried = len(decoder.getstate()[0])
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line += chunk.count(b"\n", 0, max(0, exc.start - carried))
                    break
                line += chunk.count(b"\n")
            else:
                line = 0  # no bad byte found: the file changed under us
    except OSError:
        line = 0
    utf8 = encoding.startswith("utf-8")
    shown = "UTF-8" if utf8 else encoding.upper()
    hint = (
        _t("if it was saved by Excel or WPS on Chinese Windows, retry with --encoding gbk")
        if utf8
        else _t("retry with --encoding gb18030, or --encoding utf-8")
        if encoding == "gbk"
        else _t("retry with --encoding utf-8 or --encoding gbk")
    )
    if line:
        return ImportFailed(
            _t(
                "{path}: line {line} of the file is not valid {encoding}; {hint}",
                path=path,
                line=line,
                encoding=shown,
                hint=hint,
            )
        )
    return ImportFailed(
        _t("{path}: the file is not valid {encoding}; {hint}", path=path, encoding=shown, hint=hint)
    )


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    if "NUL" in text:
        return _t("contains a NUL byte")
    if "field larger" in text:
        return _t("a cell is larger than 4 MiB")
    return _t("unbalanced quotes or stray characters")


def _iter_jsonl(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, Row]]:
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ImportFailed(_t("cannot read {path}: {why}", path=path, why=exc.strerror)) from exc
    with fh:
        number = 0
        while True:
            line = fh.readline(MAX_CELL + 1)
            if not line:
                return
            if len(line) > MAX_CELL and not line.endswith(b"\n"):
                # Skip the rest of an oversized line without holding it in memory.
                while line and not line.endswith(b"\n"):
                    line = fh.readline(MAX_CELL)
                number += 1
                yield number, BadRow(_t("line is larger than 4 MiB"))
                continue
            if not line.strip():
                continue
            number += 1
            try:
                text_codec = "utf-8-sig" if encoding == "utf-8" and number == 1 else encoding
                obj = json.loads(line.decode(text_codec))
            except UnicodeDecodeError:
                if encoding == "utf-8":
                    yield number, BadRow(_t("is not valid UTF-8"))
                else:
                    yield number, BadRow(_t("is not valid {encoding}", encoding=encoding.upper()))
                continue
            except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
                yield number, BadRow(_t("is not a JSON object"))
                continue
            if not isinstance(obj, dict) or len(obj) > MAX_COLUMNS:
                yield number, BadRow(_t("is not a JSON object of field names to values"))
                continue
            row: dict[str, str] = {}
            bad = None
            for key, value in obj.items():
                if isinstance(value, list) and all(isinstance(v, str) for v in value):
                    value = ";".join(value)  # e.g. "purposes": ["a", "b"]
                if isinstance(value, bool) or not isinstance(value, str | int):
                    bad = _t("value of {key!r} must be text", key=key)
                    break
                row[str(key)] = str(value)
            yield number, (BadRow(bad) if bad else row)


# ------------------------------------------------------------------ duplicates

#: Blind-index tags are truncated on purpose (INDEX_TAG_BYTES, 16 bits), so one
#: field's tag matches unrelated records; a record counts as a possible duplicate
#: only when the tags of at least this many searchable fields all match.
MIN_VAULT_MATCH_FIELDS = 2


class FieldTitle(Message):
    """A field named in a message: its name in English; in a translation its
    schema label and name (``身份证号 (id_number)``), as ``list`` and ``read``
    show fields. The label is the schema's, not the catalog's: no gettext."""

    label: str | None

    def __new__(cls, name: str, label: str | None = None) -> FieldTitle:
        """The field ``name`` with its Chinese ``label`` (None: the name alone)."""
        self = cast("FieldTitle", super().__new__(cls, name))
        self.label = label
        return self

    def __getnewargs__(self) -> tuple[str, str | None]:  # type: ignore[override]
        return (str(self), self.label)

    def in_locale(self, locale: str | None = None) -> str:
        """The name in English, ``label (name)`` in another locale."""
        chosen = environment_locale() if locale is None else normalize_locale(locale)
        if chosen == DEFAULT_LOCALE or not self.label:
            return str(self)
        return f"{self.label} ({self})"


@dataclass(frozen=True)
class DuplicateKey:
    """The fields that tell whether two rows are the same child.

    ``identity``: a searchable ``id_number`` field identifies one person, so it
    alone decides within a file (every searchable field together when the type
    has none). ``searchable``: the fields compared with the vault's blind index.
    """

    identity: tuple[str, ...]
    searchable: tuple[str, ...]
    #: (field, Chinese label) of the fields that have one, for the messages.
    labels: tuple[tuple[str, str], ...] = ()

    def titles(self, fields: Iterable[str]) -> Message:
        """``fields`` as a message lists them (labels in a translation, never values)."""
        labels = dict(self.labels)
        return join(", ", (FieldTitle(f, labels.get(f)) for f in fields))

    @functools.cached_property
    def fields(self) -> tuple[str, ...]:
        """Every field the duplicate checks read (worked out once: an import asks
        for every row)."""
        return tuple(dict.fromkeys((*self.identity, *self.searchable)))

    @classmethod
    def of(cls, rtype: RecordType) -> DuplicateKey:
        """The duplicate key of a record type (no fields: duplicates are not detectable)."""
        searchable = tuple(n for n, f in rtype.fields.items() if f.searchable)
        ids = tuple(n for n in searchable if rtype.fields[n].type == "id_number")
        labels = tuple(
            (n, label) for n in searchable if (label := field_label(rtype.fields[n].description))
        )
        return cls(ids[:1] or searchable, searchable, labels)


class DuplicateFinder:
    """Finds rows that repeat an earlier row of the file or a record of the vault.

    Within the file, rows are compared by a keyed hash under a random key that
    lives only as long as this object: exact, and neither the values nor a
    lasting fingerprint of them are kept. Against the vault, by the stored
    blind-index tags (keyed, truncated): a record whose tags match on at least
    :data:`MIN_VAULT_MATCH_FIELDS` searchable fields (the identity number and
    the guardian's phone for children) *may* be the same child and is named.
    A row with fewer of those fields is compared within the file only.
    """

    def __init__(
        self,
        key: DuplicateKey,
        tags: Callable[[str, list[str]], list[bytes]],
        in_vault: Callable[[str, list[bytes]], list[list[str]]],
    ) -> None:
        """``tags(field, values)``: blind-index tags; ``in_vault(field, tags)``: the
        record ids of each tag, in order (``records.find_by_tags``)."""
        self._key = key
        self._tags = tags
        self._in_vault = in_vault
        self._secret = secrets.token_bytes(32)
        self._seen: dict[bytes, int] = {}

    def _fingerprint(self, values: Mapping[str, str]) -> bytes | None:
        identity = self._key.identity
        if len(identity) == 1:
            # One identity field (an identity number): its text alone, the
            # bytes the join below gives for one part, without the join.
            value = values.get(identity[0])
            if not value:
                return None
            text = value.encode("utf-8")
        else:
            parts = [values.get(f) for f in identity]
            if not parts or not all(parts):
                return None
            text = "\x00".join(p or "" for p in parts).encode("utf-8")
        # One-shot HMAC (OpenSSL in C): the same bytes as hmac.new(...).digest().
        return hmac.digest(self._secret, text, "sha256")

    def check(
        self, rows: Sequence[tuple[int, Mapping[str, str]]], *, against_vault: Callable[[int], bool]
    ) -> dict[int, str]:
        """``{row: reason}`` for each duplicate among ``rows`` (normalised values).

        ``against_vault(row)`` says whether that row is compared with the vault
        (not rows an interrupted run of the same file already wrote).
        """
        found: dict[int, str] = {}
        # Each row with the searchable fields it fills (worked out once a row).
        to_vault: list[tuple[int, Mapping[str, str], list[str]]] = []
        searchable = self._key.searchable
        seen = self._seen
        fingerprint_of = self._fingerprint
        for number, values in rows:
            fingerprint = fingerprint_of(values)
            if fingerprint is not None:
                first = seen.setdefault(fingerprint, number)
                if first != number:
                    found[number] = _t(
                        "same {fields} as row {row} (a duplicate); pass "
                        "--allow-duplicates to import it anyway",
                        fields=self._key.titles(self._key.identity),
                        row=first,
                    )
                    continue
            present = [f for f in searchable if values.get(f)]
            if len(present) >= MIN_VAULT_MATCH_FIELDS and against_vault(number):
                to_vault.append((number, values, present))
        # Per field, the tags of every row of the batch and their candidates in one
        # call each (one round trip through the server, not one per row).
        candidates: dict[tuple[int, str], list[str]] = {}
        for field in searchable:
            having = [(n, v[field]) for n, v, _p in to_vault if v.get(field)]
            if having:
                computed = self._tags(field, [value for _n, value in having])
                ids_of = self._in_vault(field, list(computed))
                if len(ids_of) != len(having):
                    raise IntegrityError(
                        _t("the blind index answered for the wrong number of tags")
                    )
                candidates.update(
                    ((n, field), ids) for (n, _v), ids in zip(having, ids_of, strict=True)
                )
        for number, _values, present in to_vault:
            ids: set[str] | None = None
            for field in present:
                matches = set(candidates[number, field])
                ids = matches if ids is None else ids & matches
                if not ids:
                    break
            if ids:
                found[number] = _t(
                    "a record with the same {fields} may already exist ({ids}); pass "
                    "--allow-duplicates to import it anyway",
                    fields=self._key.titles(present),
                    ids=", ".join(sorted(ids)[:3]) + (" ..." if len(ids) > 3 else ""),
                )
        return found
