"""Every action the library logs has a label people read, in the CLI and the
console, and the label has a Chinese translation."""

from __future__ import annotations

from childvault._i18n import gettext
from childvault._labels import ACTION_LABELS, OUTCOME_LABELS, action_label, outcome_label
from childvault.vault._audit import ACTIONS, OUTCOMES


def test_every_logged_action_and_outcome_has_a_label() -> None:
    assert not sorted(ACTIONS - set(ACTION_LABELS)), "add a label to childvault/_labels.py"
    assert set(OUTCOMES) <= set(OUTCOME_LABELS)
    # No label for an action nobody logs (a renamed action leaves one behind).
    assert not sorted(set(ACTION_LABELS) - ACTIONS)


def test_the_console_shows_the_same_labels() -> None:
    from childvault.console import _format

    assert set(_format.ACTION_LABELS) >= set(ACTION_LABELS)
    assert _format.ACTION_LABELS["record.resign"] == ACTION_LABELS["record.resign"]


def test_labels_read_in_chinese_and_unknown_codes_show_as_they_are() -> None:
    assert action_label("record.resign", "zh_CN") == "重新签署档案"
    assert action_label("record.resign", "en") == "record re-signed"
    assert outcome_label("denied", "zh_CN") == gettext("refused", "zh_CN") != "refused"
    assert action_label("no.such", "zh_CN") == "no.such"
    for label in ACTION_LABELS.values():
        assert gettext(label, "zh_CN") != label, label
