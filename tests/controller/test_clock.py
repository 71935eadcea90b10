"""Clock synchronisation (protocol §4.5): the controller answers every board's request at
once with signed stamps and refuses floods and junk; a board's filter finds the offset and
the drift of its oscillator from exchanges whose delays vary."""

from __future__ import annotations

import json
import random
import time

from nacl.signing import SigningKey

from controller.timesvc import BURST, TimeService
from controller.transport.memory import MemoryLink
from devices import topics
from devices.clock import ClockFilter, parse_reply, request_payload
from devices.signing import key_id


def test_the_controller_answers_a_request_with_signed_stamps_around_its_arrival() -> None:
    link, key = MemoryLink(), SigningKey.generate()
    link.subscribe([(topics.CLUSTER_TIME_ALL, 0)])
    svc = TimeService(link, key)
    link.fast = svc.handle
    link.start()
    t1 = time.time_ns() // 1000
    assert link.deliver(topics.cluster_time("hd-c01"), request_payload(7, t1))
    (reply,) = link.sent_to(topics.cluster_time_reply("hd-c01"))
    seq, echoed, t2, t3 = parse_reply(reply.payload, {key_id(key.verify_key): key.verify_key})
    assert (seq, echoed) == (7, t1) and t1 <= t2 <= t3 <= time.time_ns() // 1000
    assert reply.qos == 0 and link.inbox.qsize() == 0  # never queued behind the database
    # signed by another key: refused by the board
    other = SigningKey.generate()
    try:
        parse_reply(reply.payload, {key_id(other.verify_key): other.verify_key})
        raise AssertionError("a reply verified with a key that did not sign it")
    except ValueError:
        pass


def test_floods_and_junk_are_not_answered_and_are_counted() -> None:
    link, key = MemoryLink(), SigningKey.generate()
    link.subscribe([(topics.CLUSTER_TIME_ALL, 0)])
    svc = TimeService(link, key)
    link.fast = svc.handle
    link.start()
    for i in range(BURST + 20):
        link.deliver(topics.cluster_time("hd-c02"), request_payload(i, 1))
    assert len(link.sent_to(topics.cluster_time_reply("hd-c02"))) == BURST
    assert svc.counters["time_limited"] == 20
    for junk in (b"", b"{", json.dumps({"v": 1, "seq": -1, "t1": 0}).encode(),
                 json.dumps({"v": 2, "seq": 1, "t1": 0}).encode(), b"x" * 5000):
        link.deliver(topics.cluster_time("hd-c03"), junk)
    assert svc.counters["time_invalid"] == 5
    assert not link.sent_to(topics.cluster_time_reply("hd-c03"))


def _exchanges(f: ClockFilter, seed: int, offset0: float, ppm: float) -> tuple[int, float]:
    """60 exchanges 10 s apart over legs of 0.8-30 ms each (a 4G link); returns the board's
    clock 10 s after the last one and the true offset then."""
    rng = random.Random(seed)
    start = board = 1_800_000_000_000_000
    for _ in range(60):
        up, down = rng.uniform(800, 30_000), rng.uniform(800, 30_000)  # µs each way
        true_offset = offset0 + ppm * 1e-6 * (board - start)
        t2 = int(board + up + true_offset)
        t3 = t2 + 200
        f.add(board, t2, t3, int(t3 - true_offset + down))
        board += 10_000_000
    return board, offset0 + ppm * 1e-6 * (board - start)


def test_the_filter_finds_offset_and_drift_through_jittery_delays() -> None:
    # the controller 10 s ahead, the board's oscillator 150 ppm slow; 100 different links
    errors, drifts = [], []
    for seed in range(100):
        f = ClockFilter()
        now, truth = _exchanges(f, seed, 10_000_000, 150.0)
        errors.append(abs(f.correction_us(now) - truth))
        drifts.append(abs(f.drift_ppm - 150.0))
        assert f.steps == 0
    errors.sort()
    assert errors[49] < 2_000 and errors[94] < 5_000, (errors[49], errors[94])  # p50, p95
    assert sorted(drifts)[94] < 30


def test_a_step_of_the_boards_clock_is_learned_again_at_once() -> None:
    f = ClockFilter()
    now, truth = _exchanges(f, 1, 10_000_000, 0.0)
    # the board's clock is set back 3 s by hand: the controller now seems 3 s further ahead
    f.add(now, now + 200 + int(truth) + 3_000_000, now + 400 + int(truth) + 3_000_000, now + 600)
    assert f.steps == 1
    assert abs(f.correction_us(now + 600) - truth - 3_000_000) < 1_000


def test_replies_held_up_on_the_way_back_do_not_move_a_right_clock() -> None:
    """A controller or broker under load: each request arrives in 5 ms, each reply waits
    0.5-1.6 s in a queue. A board whose clock is right keeps it right; a board 10 s off is
    brought to within the round trip, and the first quick exchange finishes the work."""
    for offset in (0, 10_000_000):
        f, rng = ClockFilter(), random.Random(offset)
        board = 1_800_000_000_000_000
        for _ in range(8):
            t2 = board + 5_000 + offset
            t3 = t2 + 100
            f.add(board, t2, t3, t3 - offset + int(rng.uniform(500_000, 1_600_000)))
            board += 1_000_000
            assert abs(f.correction_us(board) - offset) <= 1_600_000
        if offset == 0:
            assert f.correction_us(board) == 0  # (the middle of the interval is ~-0.5 s)
        f.add(board, board + 1_000 + offset, board + 1_100 + offset, board + 2_100)
        assert abs(f.correction_us(board + 2_100) - offset) < 1_000


def test_noise_is_not_taken_for_drift() -> None:
    """Twelve slow exchanges over 22 s whose queueing swings from one leg to the other: a
    right clock read 30 s later is still right (a slope fitted to them would say 4 %)."""
    f, rng = ClockFilter(), random.Random(3)
    board = 1_800_000_000_000_000
    for i in range(12):
        up, down = (5_000, 1_600_000) if i < 6 else (1_600_000, 5_000)
        t2 = board + up
        f.add(board, t2, t2 + 100, t2 + 100 + down + int(rng.uniform(0, 50_000)))
        board += 2_000_000
    assert abs(f.correction_us(board + 30_000_000)) < 1_000 and abs(f.drift_ppm) <= 500
