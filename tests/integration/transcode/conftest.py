"""Fixtures for transcode tests: a CA, a 30 s test video, mesh nodes in 127.0.5.0/24."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from smartget.mesh import App, MeshSettings
from smartget.mesh.ca import init_ca, issue_node
from smartget.transcode.runner import default_ffmpeg

FFMPEG = default_ffmpeg()


def make_video(path: Path, seconds: int = 30, size: str = "320x240", gop: int = 50) -> Path:
    """lavfi testsrc + sine, H.264 (a keyframe every ``gop`` frames) and AAC, in MP4."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate=25",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
         "-c:v", "libx264", "-preset", "ultrafast", "-g", str(gop), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-shortest", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("video") / "in.mp4")


@pytest.fixture
def pki(tmp_path: Path) -> Callable[[str], Path]:
    """issue(node_id) -> NODE_DIR, all from one CA in tmp_path/ca."""
    init_ca(tmp_path / "ca")

    def issue(node_id: str) -> Path:
        return issue_node(tmp_path / "ca", node_id, tmp_path / "nodes" / node_id).parent

    return issue


def node_settings(
    tls_dir: Path, data_dir: Path, host: str, app: App, peers: list[tuple[str, int]] | None = None
) -> MeshSettings:
    return MeshSettings(
        tls_dir=tls_dir,
        data_dir=data_dir,
        listen=(host, 0),
        peers=peers or [],
        apps=[],
        extra_apps={"transcode": app},
        heartbeat=0.3,
        retry_interval=0.1,
        retry_count=300,
        dial_learned=False,
        connect_timeout=5.0,
    )
