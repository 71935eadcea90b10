"""When a CAP alert that is not an emergency airs: ahead of its <onset>, and never refused
because its own speech took long to synthesise. On the in-memory link."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from audio import TTSEngine
from tests.utils.commune import memory_commune

VN = ZoneInfo("Asia/Ho_Chi_Minh")

ALERT = """<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>{ident}</identifier>
  <sender>pccc@vinhphuc.gov.vn</sender>
  <sent>{sent}</sent>
  <status>Actual</status>
  <msgType>Alert</msgType>
  <scope>Public</scope>
  <info>
    <language>vi-VN</language>
    <category>Met</category>
    <event>Lũ</event>
    <urgency>Expected</urgency>
    <severity>Moderate</severity>
    <certainty>Likely</certainty>{onset}
    <expires>{expires}</expires>
    <headline>Cảnh báo lũ trên sông Phó Đáy</headline>
    <description>Mực nước sông Phó Đáy đang lên.</description>
    <area><areaDesc>Xã Hướng Đạo</areaDesc></area>
  </info>
</alert>"""


class SlowTTS:
    """The commune's voice, taking as long as a 2,000-character text does."""

    def __init__(self, inner: TTSEngine, delay_s: float):
        self.inner, self.delay_s, self.name = inner, delay_s, inner.name

    def voice_for(self, language: str) -> str | None:
        return self.inner.voice_for(language)

    def synthesize(self, *args: Any, **kw: Any) -> Any:
        time.sleep(self.delay_s)
        return self.inner.synthesize(*args, **kw)


def _post(api: Any, ident: str, onset: datetime | None = None, language: str = "vi-VN",
          text: str = "Mực nước sông Phó Đáy đang lên.") -> Any:
    now = datetime.now(VN).replace(microsecond=0)
    xml = ALERT.format(ident=ident, sent=now.isoformat(),
                       expires=(now + timedelta(hours=6)).isoformat(),
                       onset=f"\n    <onset>{onset.isoformat()}</onset>" if onset else "")
    xml = xml.replace("<language>vi-VN</language>", f"<language>{language}</language>")
    xml = xml.replace("Mực nước sông Phó Đáy đang lên.", text)
    return api.post("/api/v1/cap", content=xml.encode(),
                    headers={"Content-Type": "application/xml"})


def test_a_priority_alert_airs_ahead_of_its_onset(tmp_path: Path) -> None:
    with memory_commune(tmp_path, cap_onset_lead_s=1800) as (api, _link):
        onset = (datetime.now(VN) + timedelta(hours=2)).replace(microsecond=0)
        r = _post(api, "VP-LU-0001", onset)
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["priority"] == "priority"
        start = datetime.fromisoformat(api.get(
            f"/api/v1/broadcasts/{body['broadcast_id']}").json()["start_at"])
        assert abs((start - (onset - timedelta(seconds=1800))).total_seconds()) < 1
        # the Ack says who answers, not the controller's time zone
        assert "<sender>loa-controller@" in body["ack"]


def test_a_long_synthesis_does_not_make_the_start_late(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        rt = api.app.state.runtime
        rt.tts = SlowTTS(rt.tts, 6.0)  # longer than the 5 s the start is ahead of "now"
        asked = datetime.now(VN)
        r = _post(api, "VP-LU-0002")
        assert r.status_code == 201, r.text
        start = datetime.fromisoformat(api.get(
            f"/api/v1/broadcasts/{r.json()['broadcast_id']}").json()["start_at"])
        assert start >= asked + timedelta(seconds=6 + 5 - 0.5)


def test_each_alert_is_read_in_its_own_language(tmp_path: Path) -> None:
    with memory_commune(tmp_path) as (api, _link):
        r = _post(api, "VP-LU-0003", language="en-US",
                  text="The Pho Day river is rising. Move to higher ground.")
        assert r.status_code == 201, r.text
        assert r.json()["read_as"] == "read in en-US (voice en-us)"
        assert "read in en-US" in r.json()["ack"]
        # a language no voice speaks: the Vietnamese voice, and the Ack says why
        r = _post(api, "VP-LU-0004", language="km-KH", text="Mực nước đang lên.")
        assert r.status_code == 201, r.text
        assert r.json()["read_as"] == "no voice for km-KH: read by the Vietnamese voice"
