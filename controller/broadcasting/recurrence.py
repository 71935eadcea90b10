"""Recurring schedules: RFC 5545 RRULEs in a named time zone, with exception dates.

Example (Mon-Sat at 05:30 and 17:00, Vietnam time, not on 2 September)::

    {"rrule": ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=5;BYMINUTE=30",
               "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA;BYHOUR=17;BYMINUTE=0"],
     "timezone": "Asia/Ho_Chi_Minh", "exdates": ["2026-09-02"]}

Rules are evaluated in local wall time, so a slot stays at 05:30 local whatever the offset.
An exdate that is a date skips every slot on that local day; a date-time skips that slot.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import HOURLY, rruleset, rrulestr
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.errors import Invalid

__all__ = ["Recurrence", "RecurrenceError"]


class RecurrenceError(Invalid, ValueError):
    pass


class Recurrence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rrule: list[str] = Field(min_length=1, max_length=16,
                             description="RFC 5545 RRULE values (without 'RRULE:')")
    timezone: str = Field("Asia/Ho_Chi_Minh", description="IANA zone of the wall times")
    dtstart: datetime | None = Field(None, description="first possible slot (local if naive)")
    exdates: list[date | datetime] = Field(default_factory=list, max_length=1000)

    @field_validator("rrule", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def _set(self, now: datetime) -> rruleset:
        zone = self.zone
        if self.dtstart is None:
            start = now.astimezone(zone).replace(second=0, microsecond=0, tzinfo=None)
        elif self.dtstart.tzinfo is None:
            start = self.dtstart
        else:
            start = self.dtstart.astimezone(zone).replace(tzinfo=None)
        rs = rruleset()
        for text in self.rrule:
            text = text.strip()
            if text.upper().startswith("RRULE:"):
                text = text[6:]
            if "DTSTART" in text.upper():
                raise RecurrenceError("recurrence_dtstart_in_rule",
                                      "give dtstart as its own field, not inside the rule")
            try:
                rule = rrulestr(text, dtstart=start)
            except (ValueError, TypeError) as exc:
                raise RecurrenceError("recurrence_invalid", f"invalid RRULE {text!r}: {exc}",
                                      rule=text) from None
            if getattr(rule, "_freq", HOURLY) > HOURLY:
                raise RecurrenceError("recurrence_too_frequent", "a rule may repeat at most hourly")
            rs.rrule(rule)
        for ex in self.exdates:
            if isinstance(ex, datetime):
                rs.exdate(ex.astimezone(zone).replace(tzinfo=None) if ex.tzinfo else ex)
        return rs

    def next_after(self, after: datetime, now: datetime | None = None) -> datetime | None:
        """The first slot strictly after ``after`` (aware), as aware UTC; None when none left."""
        rs = self._set(now or after)
        skip_days = {d for d in self.exdates if not isinstance(d, datetime)}
        cursor = after.astimezone(self.zone).replace(tzinfo=None)
        for _ in range(10_000):
            nxt = rs.after(cursor, inc=False)
            if nxt is None:
                return None
            if nxt.date() not in skip_days:
                return nxt.replace(tzinfo=self.zone).astimezone(UTC)
            cursor = nxt
        return None

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        out: list[datetime] = []
        cur = after
        for _ in range(count):
            nxt = self.next_after(cur, now=after)
            if nxt is None:
                break
            out.append(nxt)
            cur = nxt
        return out

    def validate_future(self, now: datetime) -> datetime:
        first = self.next_after(now - timedelta(seconds=1), now=now)
        if first is None:
            raise RecurrenceError("recurrence_no_future", "the recurrence has no future occurrence")
        return first
