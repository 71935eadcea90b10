from __future__ import annotations

from datetime import UTC, datetime

import pytest

from controller.broadcasting.recurrence import Recurrence, RecurrenceError

SLOTS = ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=5;BYMINUTE=30",
         "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=17;BYMINUTE=0"]


def local(r: Recurrence, d: datetime) -> str:
    return d.astimezone(r.zone).strftime("%a %Y-%m-%d %H:%M")


def test_mon_to_sat_at_0530_and_1700_vietnam_time() -> None:
    r = Recurrence(rrule=SLOTS, dtstart=datetime(2026, 11, 1))
    after = datetime(2026, 11, 21, 0, 0, tzinfo=UTC)  # Sat 07:00 local
    got = [local(r, d) for d in r.upcoming(after, 4)]
    assert got == ["Sat 2026-11-21 17:00", "Mon 2026-11-23 05:30", "Mon 2026-11-23 17:00",
                   "Tue 2026-11-24 05:30"]  # no Sunday
    first = r.next_after(after)
    assert first == datetime(2026, 11, 21, 10, 0, tzinfo=UTC)  # 17:00 +07:00 in UTC


def test_exception_dates_skip_a_day_or_one_slot() -> None:
    r = Recurrence(rrule=SLOTS, dtstart=datetime(2026, 11, 1),
                   exdates=["2026-11-23", datetime(2026, 11, 24, 5, 30)])
    got = [local(r, d) for d in r.upcoming(datetime(2026, 11, 21, 12, 0, tzinfo=UTC), 2)]
    assert got == ["Tue 2026-11-24 17:00", "Wed 2026-11-25 05:30"]


def test_until_ends_the_series() -> None:
    r = Recurrence(rrule="FREQ=DAILY;BYHOUR=6;BYMINUTE=0;COUNT=2", dtstart=datetime(2026, 11, 20))
    assert len(r.upcoming(datetime(2026, 11, 19, tzinfo=UTC), 10)) == 2
    with pytest.raises(RecurrenceError):
        r.validate_future(datetime(2026, 12, 1, tzinfo=UTC))


@pytest.mark.parametrize("rule", ["FREQ=SOMETIMES", "BYHOUR=5", "FREQ=MINUTELY",
                                  "DTSTART:20260101T000000\nFREQ=DAILY"])
def test_bad_rules_are_refused(rule: str) -> None:
    with pytest.raises(RecurrenceError):
        Recurrence(rrule=rule).validate_future(datetime(2026, 11, 21, tzinfo=UTC))


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError):
        Recurrence(rrule=SLOTS, timezone="Mars/Olympus")
