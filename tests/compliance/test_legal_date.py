"""The identity number's birth date is checked against the legal date (issue 15 finding 6).

The check used the machine's date: a vault whose legal day (Asia/Shanghai by
default) differs from it, or a server whose clock is not the vault's, accepted
a birth date after "today" or refused one born today in Beijing before 08:00.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from childvault.keys import ValidationError
from childvault.vault._schema import Schema
from childvault.vault._validators import make_id_number
from tests.conftest import World, add_children, child_values


def test_a_correction_checks_the_birth_date_against_the_vaults_legal_day(world: World) -> None:
    with world.open("worker1") as v:
        (rid,) = add_children(v, 1)
    # 17:00 UTC on the 24th is 01:00 on the 25th in Beijing: the legal day is the 25th.
    world.clock.now = datetime(2026, 11, 24, 17, 0, tzinfo=UTC)
    legal = date(2026, 11, 25)
    with world.open("officer1") as v:
        v.correct(rid, "id_number", make_id_number("110105", legal, 102))
        # The next day is in the future for the vault, whatever the machine's date.
        with pytest.raises(ValidationError, match="future"):
            v.correct(rid, "id_number", make_id_number("110105", legal + timedelta(days=1), 102))


def test_the_schema_takes_the_legal_day_for_records_and_fields() -> None:
    schema = Schema.default()
    day = date(2020, 5, 1)
    born = make_id_number("110105", day + timedelta(days=1), 102)
    with pytest.raises(ValidationError, match="future"):
        schema.validate_field("child", "id_number", born, today=day)
    values = child_values(0, date_of_birth=(day + timedelta(days=1)).isoformat(), id_number=born)
    with pytest.raises(ValidationError, match="future"):
        schema.validate_record("child", values, today=day)
    # The same value on the following day passes, and nothing is left set after a call.
    assert schema.validate_field("child", "id_number", born, today=day + timedelta(days=1)) == born
    assert schema.validate_field("child", "id_number", born) == born
