"""Lazy library messages: English for ``str()``, logs and JSON; the reader's
language where a person reads them."""

from __future__ import annotations

import pickle

from childvault import _i18n
from childvault._i18n import Message, _t, localize
from childvault.keys import ApprovalInvalid, ImportFailed, NotFound


def test_a_message_is_its_english_text() -> None:
    m = _t("cannot read {path}: {why}", path="/tmp/x.csv", why="No such file or directory")
    assert isinstance(m, str)
    assert m == "cannot read /tmp/x.csv: No such file or directory"
    assert m.template == "cannot read {path}: {why}"
    assert m.params == {"path": "/tmp/x.csv", "why": "No such file or directory"}


def test_it_translates_by_template_and_fills_the_same_values() -> None:
    m = _t("cannot read {path}: {why}", path="/tmp/x.csv", why="denied")
    assert m.in_locale("zh_CN") == "无法读取 /tmp/x.csv：denied"
    assert m.in_locale("en") == str(m)
    assert localize(m, "zh_CN") == "无法读取 /tmp/x.csv：denied"
    assert localize("plain text", "zh_CN") == "plain text"


def test_nested_messages_are_translated_too() -> None:
    inner = _t("contains a NUL byte")
    outer = _t("malformed CSV ({why})", why=inner)
    assert str(outer) == "malformed CSV (contains a NUL byte)"
    assert outer.in_locale("zh_CN") == "CSV 格式错误（含有 NUL 字节）"


def test_an_untranslated_template_falls_back_to_english() -> None:
    m = _t("a message nobody translated {n}", n=3)
    assert m.in_locale("zh_CN") == "a message nobody translated 3"


def test_a_broken_translation_shows_english_instead_of_failing(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Error handling only: a catalog entry naming a field the code does not pass.
    monkeypatch.setattr(_i18n, "gettext", lambda message, locale=None: "坏的 {nope}")
    assert _t("no record {id}", id="ab").in_locale("zh_CN") == "no record ab"


def test_it_survives_pickling_as_english_text() -> None:
    m = _t("no record {id}", id="ab12")
    back = pickle.loads(pickle.dumps(m))
    assert back == "no record ab12" and isinstance(back, Message)


def test_errors_keep_their_type_and_english_str() -> None:
    exc = ImportFailed(_t("{path}: the header row is not valid CSV", path="a.csv"))
    assert isinstance(exc, ImportFailed)
    assert str(exc) == "a.csv: the header row is not valid CSV"
    assert exc.localized("zh_CN") == "a.csv：表头行不是有效的 CSV"
    # A plain English message (not yet marked) is shown as it is.
    assert NotFound("no record x").localized("zh_CN") == "no record x"
    opaque = ApprovalInvalid("expired")
    assert str(opaque).startswith("the approval token is not valid for this read")
    assert opaque.localized("zh_CN").startswith("该批准令牌对本次读取无效")
    assert "expired" not in opaque.localized("zh_CN")
