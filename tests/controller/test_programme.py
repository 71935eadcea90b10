"""The programme layout: items on shared clusters play back to back, in a stated order."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from controller.access.policy import Policy, ProgrammeSlot, VolumeCap, violations
from controller.broadcasting.programme import Item, layout

T = datetime(2026, 11, 23, 22, 30, tzinfo=UTC)  # 05:30 in Hanoi
GAP = timedelta(seconds=2)
S = timedelta(seconds=1)


def item(bid: str, priority: str = "normal", slot: datetime = T, secs: int = 60,
         clusters: str = "ab", created: int = 0, position: int | None = None, **kw: object) -> Item:
    return Item(bid, bid, priority, slot, timedelta(seconds=secs), frozenset(clusters),
                T + timedelta(minutes=created), position, **kw)  # type: ignore[arg-type]


def starts(items: list[Item]) -> dict[str, datetime]:
    return {i.broadcast_id: i.start for i in layout(items, GAP)}  # type: ignore[misc]


def test_priority_plays_before_local_items_in_the_same_slot() -> None:
    got = starts([item("local", created=0), item("province", "priority", created=5)])
    assert got["province"] == T
    assert got["local"] == T + timedelta(seconds=60) + GAP


def test_position_reorders_within_a_rank_but_never_across_ranks() -> None:
    items = [item("p1", "priority", created=0), item("p2", "priority", created=1, position=0),
             item("n", "normal", position=0)]
    got = starts(items)
    assert got["p2"] == T and got["p1"] == T + 62 * S and got["n"] == T + 124 * S


def test_items_on_other_clusters_do_not_wait() -> None:
    got = starts([item("a", clusters="a", secs=300), item("b", clusters="b", created=1)])
    assert got["a"] == got["b"] == T


def test_an_item_waits_for_every_cluster_it_shares() -> None:
    items = [item("x", clusters="a", secs=30), item("y", clusters="b", secs=90, created=1),
             item("all", clusters="ab", created=2)]
    assert starts(items)["all"] == T + 90 * S + GAP


def test_dispatched_items_are_fixed_and_later_items_go_around_them() -> None:
    fixed = item("sent", slot=T, secs=60, created=9, fixed=True, start=T + 10 * S,
                 end=T + 70 * S)
    got = starts([fixed, item("new", "priority", secs=5, created=0)])
    assert got["sent"] == T + 10 * S  # never moved
    assert got["new"] == T  # fits before it (5 s + gap <= 10 s)
    got = starts([fixed, item("long", "priority", secs=30, created=0)])
    assert got["long"] == T + 72 * S


def test_a_normal_item_booked_just_before_a_priority_one_cannot_push_it() -> None:
    got = starts([item("early", slot=T - S, secs=60), item("prio", "priority", created=1)])
    assert got["prio"] == T and got["early"] == T + 62 * S


def test_a_later_slot_overlapping_a_running_item_waits_for_it() -> None:
    got = starts([item("long", secs=600), item("later", slot=T + 60 * S, created=1)])
    assert got["later"] == T + 602 * S


def test_next_programme_slot_and_volume_cap() -> None:
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    pol = Policy(programme=[ProgrammeSlot(at=time(5, 30)), ProgrammeSlot(at=time(17, 0))],
                 volume_caps=[VolumeCap(start=time(21, 0), end=time(6, 0), max_pct=40)])
    sat_noon = datetime(2026, 11, 28, 12, 0, tzinfo=zone)  # Saturday
    assert pol.next_programme(sat_noon, zone) == datetime(2026, 11, 28, 17, 0, tzinfo=zone)
    sat_evening = datetime(2026, 11, 28, 18, 0, tzinfo=zone)  # no Sunday programme
    assert pol.next_programme(sat_evening, zone) == datetime(2026, 11, 30, 5, 30, tzinfo=zone)
    assert pol.volume_cap(time(5, 30)) == 40 and pol.volume_cap(time(12, 0)) is None
    early = datetime(2026, 11, 30, 5, 30, tzinfo=zone)
    [cap] = violations(pol, "xã Hướng Đạo", early, 60, zone, volume_pct=80, area_id="hd")
    assert cap.code == "volume_cap" and "volume 80% is above the 40% cap at 05:30" in cap.message
    assert cap.params == {"area": "hd", "area_name": "xã Hướng Đạo", "volume_pct": 80,
                          "cap_pct": 40, "at": "05:30"}
    assert violations(pol, "xã Hướng Đạo", early, 60, zone, volume_pct=40) == []
