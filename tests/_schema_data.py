"""What the schema tests share: the default schema's fields and purposes, a
valid identity number and phone, a minimal child record."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from childvault.vault._schema import Schema
from childvault.vault._validators import make_id_number

ROOT = Path(__file__).resolve().parents[1]
CHILD_TOML = ROOT / "childvault" / "vault" / "schemas" / "child.toml"
SAMPLE = ROOT / "childvault" / "vault" / "data" / "sample.csv"

CHILD_FIELDS = (
    "name",
    "sex",
    "date_of_birth",
    "id_number",
    "address",
    "school",
    "guardian_name",
    "guardian_phone",
    "difficulty_category",
    "health",
    "disability",
    "case_notes",
    "photo",
)
PURPOSES = (
    "case_management",
    "social_assistance",
    "education_support",
    "medical_care",
    "legal_protection",
    "statistics",
)

ID = make_id_number("990101", date(2015, 3, 9), 123)  # male (3 is odd)
PHONE = "13912345678"


def child(**extra: str) -> dict[str, str]:
    values = {"name": "王小明", "date_of_birth": "2015-03-09"}
    values.update(extra)
    return values


MINIMAL = """\
name = "mini"
version = 2
purposes = ["care", "statistics"]

[types.person]
description = "a person"

[types.person.fields.name]
type = "text"
sensitivity = "medium"
identifier = "direct"
"""


def load(text: str) -> Schema:
    return Schema.loads(text.encode("utf-8"))
