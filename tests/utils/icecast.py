"""A private Icecast server (Debian's ``icecast2``) on a free port, fed by ffmpeg as a radio
station's encoder feeds it: the real streaming server a relay pulls from."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from audio.ffmpeg import ffmpeg_path
from tests.utils.broker import free_port, port_open, wait_for

__all__ = ["Icecast", "needs_icecast"]

ICECAST = shutil.which("icecast2") or "/usr/bin/icecast2"
if not os.path.exists(ICECAST) and os.environ.get("LOA_TEST_REQUIRE_ICECAST"):
    raise RuntimeError(f"LOA_TEST_REQUIRE_ICECAST is set and there is no icecast2 at {ICECAST}")
needs_icecast = pytest.mark.skipif(
    not os.path.exists(ICECAST),
    reason="Debian's icecast2 is not installed (apt-get install icecast2; .ci/run installs it)")

CONFIG = """<icecast>
  <limits><clients>100</clients><sources>4</sources><burst-size>16384</burst-size></limits>
  <authentication><source-password>{password}</source-password>
    <admin-user>admin</admin-user><admin-password>{password}</admin-password></authentication>
  <hostname>127.0.0.1</hostname>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{logs}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>
  <security><chroot>0</chroot>{owner}</security>
</icecast>
"""


class Icecast:
    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.password = "source-" + os.urandom(6).hex()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = folder

    def start(self) -> Icecast:
        # icecast drops root for nobody and then opens its logs: a folder nobody can reach
        # (a test's own tmp folder is 0700), removed again by stop()
        logs = Path(tempfile.mkdtemp(prefix="loa-icecast-"))
        os.chmod(logs, 0o777)
        self.logs = logs
        owner = "<changeowner><user>nobody</user><group>nogroup</group></changeowner>" \
            if os.geteuid() == 0 else ""
        conf = self.folder / "icecast.xml"
        conf.write_text(CONFIG.format(password=self.password, port=self.port, logs=logs,
                                      owner=owner))
        self.procs.append(subprocess.Popen([ICECAST, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                           stderr=subprocess.DEVNULL))
        wait_for(lambda: port_open(self.port), 10, "icecast listening")
        return self

    def feed(self, audio: Path, mount: str) -> str:
        """Stream ``audio`` (mp3) to ``mount`` in real time, looped, as a station's encoder
        would; returns the listeners' URL."""
        self.procs.append(subprocess.Popen(
            [ffmpeg_path(), "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1",
             "-i", str(audio), "-c", "copy", "-content_type", "audio/mpeg", "-f", "mp3",
             f"icecast://source:{self.password}@127.0.0.1:{self.port}/{mount}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"http://127.0.0.1:{self.port}/{mount}"

        def mounted() -> bool:
            import urllib.request
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    return len(r.read(2048)) > 0
            except OSError:
                return False
        wait_for(mounted, 15, f"icecast mount /{mount} on the air")
        return url

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.logs, ignore_errors=True)
