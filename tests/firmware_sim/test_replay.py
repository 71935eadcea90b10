"""The Dallas pattern, on the simulated firmware: a command captured off the air and played
back after the board reboots must not air. A board with storage keeps its replay window and
its held cancels across the reboot; a board without refuses whatever was issued before it
started. No broker: each board is built afresh, as a power cycle does, and handed the
captured payload as its link would."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from firmware_sim.cluster import SimCluster, SimConfig
from nacl.signing import SigningKey

from devices import topics
from devices.areas import load_fixture
from devices.messages import RefusalReason
from devices.signing import sign_command

NET = load_fixture("huong-dao")
KEY = SigningKey.generate()
CLUSTER = "hd-c03"
AREA_TOPIC = topics.area_cmd("vn-vp-tamduong-huongdao")


def _play(occurrence: str, issued: datetime) -> bytes:
    body = {"broadcast_id": uuid.uuid4().hex, "occurrence_id": occurrence,
            "priority": "normal", "start_at": (issued + timedelta(hours=1)).isoformat(),
            "content": {"sha256": "a" * 64, "size": 10, "chunk_size": 16384, "chunks": 1,
                        "codec": "opus", "container": "ogg", "duration_ms": 1000},
            "volume_pct": None, "max_volume_pct": None, "revision": 0,
            "after_preempt": "resume"}
    return sign_command(KEY, kind="play", topic=AREA_TOPIC, body=body, issued_at=issued,
                        expires_at=issued + timedelta(hours=2))


def _cancel(occurrence: str, issued: datetime) -> bytes:
    return sign_command(KEY, kind="cancel", topic=topics.cluster_cmd(CLUSTER),
                        body={"occurrence_id": occurrence}, issued_at=issued,
                        expires_at=issued + timedelta(hours=2))


def _boot(state_dir: Path | None) -> SimCluster:
    """A board powering up (a new process, nothing in RAM)."""
    cfg = SimConfig(keys=[KEY.verify_key], state_dir=state_dir)
    return SimCluster(NET.clusters[CLUSTER], NET.cluster_area_path(CLUSTER), cfg)


def _off(board: SimCluster) -> None:
    """Power off: what it had open on its storage is closed."""
    board.memory.close()
    board._outbox.close()


def _on_board(fn: Callable[[], Any]) -> Any:
    async def run() -> Any:
        return fn()
    return asyncio.run(run())


def test_a_board_with_storage_refuses_a_replay_after_it_reboots(tmp_path: Path) -> None:
    issued = datetime.now(UTC) - timedelta(minutes=5)
    occ, cancelled = uuid.uuid4().hex, uuid.uuid4().hex
    captured, captured_cancelled = _play(occ, issued), _play(cancelled, issued)

    def before() -> None:
        board = _boot(tmp_path)
        board._on_command(AREA_TOPIC, captured)  # accepted: it holds the play
        assert occ in board.player.occurrences and not board.refusals
        # a cancel for a play it never got (MQTT does not order topics): held
        board._on_command(topics.cluster_cmd(CLUSTER), _cancel(cancelled, issued))
        _off(board)

    def after() -> None:
        board = _boot(tmp_path)  # power cycle: a new board from the same storage
        board._on_command(AREA_TOPIC, captured)
        assert [r.reason for r in board.refusals] == [RefusalReason.REPLAYED]
        assert occ not in board.player.occurrences  # it does not air again
        # the cancelled play arriving now, even as a genuine command, is dropped
        board._on_command(AREA_TOPIC, captured_cancelled)
        assert board.player.occurrences[cancelled].state.value == "cancelled"
        _off(board)

    _on_board(before)
    _on_board(after)


def test_a_board_without_storage_refuses_what_was_issued_before_it_started() -> None:
    old = _play(uuid.uuid4().hex, datetime.now(UTC) - timedelta(minutes=5))
    fresh_occ = uuid.uuid4().hex

    def run() -> None:
        board = _boot(None)
        board._on_command(AREA_TOPIC, old)
        assert [r.reason for r in board.refusals] == [RefusalReason.REPLAYED]
        assert "issued before this board started" in (board.refusals[0].detail or "")
        # what the controller sends after the boot (its re-send on the new birth) plays
        board._on_command(AREA_TOPIC, _play(fresh_occ, datetime.now(UTC)))
        assert fresh_occ in board.player.occurrences and len(board.refusals) == 1
        _off(board)

    _on_board(run)
