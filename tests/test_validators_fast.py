"""The fast paths of the validators (issue 18, session 5) equal the plain rules."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from childvault.vault import _validators as v


@given(st.text(max_size=40))
def test_ascii_form_equals_nfkc_then_strip(text: str) -> None:
    # The ASCII shortcut must give exactly what the normaliser gives.
    assert v._ascii_form(text) == unicodedata.normalize("NFKC", text).strip()


@given(st.text(alphabet="0123456789", min_size=17, max_size=17))
def test_check_character_equals_the_weighted_sum(first17: str) -> None:
    total = sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(first17))
    assert v._id_check_char(first17) == "10X98765432"[total % 11]


def test_check_character_refuses_other_lengths() -> None:
    for bad in ("", "1" * 16, "1" * 18):
        try:
            v._id_check_char(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {len(bad)} digits")


@given(st.text(alphabet=" ()-+0123456789８６", max_size=24))
def test_phone_separators_as_before(text: str) -> None:
    # The compiled separator pattern removes what re.sub with the literal did.
    assert v._PHONE_SEPARATORS_RE.sub("", text) == re.sub(r"[ ()-]", "", text)
