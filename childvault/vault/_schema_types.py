"""What a schema is made of: field and record-type declarations, and the names and
limits they obey. Shared by the schema (validation), its TOML loader and the
consent rules, so none of them imports another to get them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass

#: Column names of the consent basis in the import format and CLI options.
#: No schema field may take one of these names.
CONSENT_COLUMNS = (
    "consent_by",
    "consented_at",
    "notice_version",
    "purposes",
    "retain_until",
    "guardian_informed",
    "guardian_also",
)
#: Optional consent columns (issue 15): who consented, and the signed form's
#: digest of a back-dated consent. The sample and templates may omit them.
CONSENT_EXTRA_COLUMNS = ("consent_party", "consent_relation", "consent_form_sha256")
#: Every consent column an import row or the CLI options may carry.
ALL_CONSENT_COLUMNS = CONSENT_COLUMNS + CONSENT_EXTRA_COLUMNS

#: The value types a field may have.
FIELD_TYPES = ("text", "date", "enum", "id_number", "phone", "binary")
#: Sensitivity levels, from least to most sensitive.
SENSITIVITIES = ("low", "medium", "high")
#: Identifier classes used by anonymised exports.
IDENTIFIERS = ("direct", "quasi", "none")
#: How an anonymised export generalises a quasi identifier.
GENERALISATIONS = ("age_band", "district", "keep")
#: Names no field may take: the import format uses them for the consent columns.
RESERVED_FIELD_NAMES = frozenset(ALL_CONSENT_COLUMNS)

_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,62}")
_MAX_SCHEMA_BYTES = 1 << 20
_MAX_TEXT_LENGTH = 1_000_000
_MAX_BINARY_BYTES = 16 << 20
_DEFAULT_TEXT_LENGTH = 200
_MAX_ALIAS_LENGTH = 64
# Canonical forms have a fixed size for these types; the schema may not set one.
_FIXED_LENGTH = {"date": 10, "id_number": 18, "phone": 13}
# Generalisations that make sense for each type: an age band needs a date, a
# district needs an address, and only a closed set of values may be kept as is.
_GENERALISE_TYPES = {"age_band": "date", "district": "text", "keep": "enum"}

# Characters refused in every value: C0/C1 controls, unpaired surrogates (not
# encodable as UTF-8) and the bidirectional embedding/override/isolate controls,
# which make displayed text differ from stored text (CVE-2021-42574).
_BAD_CHAR_RE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# In text, line breaks and tabs are legitimate (case notes have paragraphs).
_BAD_TEXT_CHAR_RE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_WHITESPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class FieldSpec:
    """One declared field of a record type.

    ``max_length`` counts characters of the normalised value (bytes after
    base64 decoding for ``binary``). ``values`` holds the canonical enum values;
    ``aliases`` maps further accepted spellings (compared case-insensitively) to
    them. ``birth_date_field`` and ``sex_field``, set only on an ``id_number``
    field, name the fields the identity number must agree with.
    """

    name: str
    type: str
    required: bool
    sensitivity: str
    identifier: str
    generalise: str | None
    searchable: bool
    low_entropy: bool
    metadata: bool
    max_length: int
    values: tuple[str, ...]
    description: str
    aliases: tuple[tuple[str, str], ...] = ()
    birth_date_field: str | None = None
    sex_field: str | None = None


@dataclass(frozen=True)
class RecordType:
    """A record type: its name and its fields in declaration order.

    ``purpose_fields`` maps each purpose to the fields it may ever release
    (P-11, P-14: "purpose decides fields"); ``None`` when the schema declares
    no lists for this type, and then every field may be released for every
    purpose (schemas written before the lists existed).
    """

    name: str
    fields: Mapping[str, FieldSpec]
    description: str
    purpose_fields: Mapping[str, tuple[str, ...]] | None = None

    def fields_for(self, purpose: str) -> tuple[str, ...]:
        """The fields ``purpose`` may release from a record of this type."""
        if self.purpose_fields is None:
            return tuple(self.fields)
        return self.purpose_fields.get(purpose, ())


def _show(name: object) -> str:
    # Names given by a user may be anything; show a bounded, escaped form.
    text = name if isinstance(name, str) else str(type(name).__name__)
    return repr(text[:64]) + ("…" if len(text) > 64 else "")


def _enum_key(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()
