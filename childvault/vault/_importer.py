"""Streaming readers for import files (CSV and JSON Lines).

Both yield ``(row_number, {column: text})`` one row at a time, so memory does
not grow with the file. Rows are numbered from 1 (the first data row; a CSV
header is not counted). A malformed row is yielded as a :class:`BadRow` so the
caller can report it with its number and go on; a file-level problem (no
header, unknown columns, not a CSV at all) raises :class:`ImportFailed`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from childvault._i18n import _t
from childvault.keys import ImportFailed

#: Largest accepted cell / line: a 2 MiB photo in base64 plus slack.
MAX_CELL = 4 << 20
MAX_COLUMNS = 256


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


def iter_rows(path: Path, fmt: str | None = None) -> Iterator[tuple[int, Row]]:
    """Yield ``(row number, row)`` from a CSV or JSON Lines file."""
    fmt = fmt or detect_format(path)
    if fmt == "jsonl":
        return _iter_jsonl(path)
    if fmt == "csv":
        return _iter_csv(path)
    raise ImportFailed(_t("unknown import format {fmt!r}: use csv or jsonl", fmt=fmt))


def _iter_csv(path: Path) -> Iterator[tuple[int, Row]]:
    csv.field_size_limit(MAX_CELL)
    try:
        # utf-8-sig: spreadsheets exported on Windows start with a BOM.
        fh = path.open("r", encoding="utf-8-sig", errors="strict", newline="")
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
            raise _not_utf8(path) from exc
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
        number = 0
        while True:
            number += 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                # The decoder cannot resynchronise reliably: stop the file here.
                raise _not_utf8(path) from exc
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
            yield number, dict(zip(header, cells, strict=True))


def _not_utf8(path: Path) -> ImportFailed:
    """The error for a file that is not UTF-8, naming the line of the first bad byte.

    The text decoder reads ahead in 8 KiB blocks, so the row being parsed when
    it fails is not where the bad byte is: find it again, in bounded chunks.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
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
    where = f"line {line} of the file" if line else "the file"
    return ImportFailed(f"{path}: {where} is not valid UTF-8; save the file as UTF-8 and retry")


def _csv_reason(exc: csv.Error) -> str:
    text = str(exc)
    if "NUL" in text:
        return _t("contains a NUL byte")
    if "field larger" in text:
        return _t("a cell is larger than 4 MiB")
    return _t("unbalanced quotes or stray characters")


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Row]]:
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
                obj = json.loads(line.decode("utf-8-sig" if number == 1 else "utf-8"))
            except UnicodeDecodeError:
                yield number, BadRow(_t("is not valid UTF-8"))
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
