"""The one copy of the small encoding helpers every module needs.

Ids are 32 lowercase hex characters (128 bits); binary values in JSON
documents are standard base64 with padding. Both are parsed strictly: a value
that round-trips differently is refused rather than normalised.
"""

from __future__ import annotations

import base64
import binascii
import re

from childvault._i18n import _t
from childvault.keys._errors import NotFound

_HEX_ID = re.compile(r"[0-9a-f]{32}")


def b64(data: bytes) -> str:
    """Standard base64 (with padding) of ``data``, as ASCII text."""
    return base64.b64encode(data).decode("ascii")


def unb64(text: object) -> bytes:
    """Decode strict standard base64; raise :class:`ValueError` on anything else."""
    if not isinstance(text, str):
        raise ValueError(_t("expected base64 text"))
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(_t("not valid base64")) from exc


def is_hex_id(value: object) -> bool:
    """Whether ``value`` is an id: exactly 32 lowercase hex characters."""
    return isinstance(value, str) and _HEX_ID.fullmatch(value) is not None


def check_hex_id(value: object, what: str) -> str:
    """Return ``value`` if it is an id, else raise :class:`NotFound` naming ``what``."""
    if not is_hex_id(value):
        raise NotFound(
            _t("no {what} {value!r}: ids are 32 lowercase hex characters", what=what, value=value)
        )
    assert isinstance(value, str)
    return value
