"""ffmpeg argv builders, the probe parser and job parameters: no ffmpeg runs here."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartget.errors import TranscodeError
from smartget.transcode.ffmpeg import (
    JobParams,
    check_extra_args,
    concat_list,
    join_argv,
    parse_probe,
    split_argv,
    transcode_argv,
)

HEADER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'in.mp4':
  Metadata:
    major_brand     : isom
  Duration: 00:00:30.02, start: 0.000000, bitrate: 243 kb/s
  Stream #0:0[0x1](und): Video: h264 (Constrained Baseline) (avc1 / 0x31637661), yuv420p
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, mono, fltp
Stream mapping:
  Stream #0:0 -> #0:0 (copy)
Output #0, null, to 'pipe:':
  Stream #0:0: Video: h264, yuv420p
"""
PROGRESS = "frame=300\nout_time_us=12000000\nprogress=continue\nframe=750\nout_time_us=29960000\n"


def test_parse_probe_reads_the_input_section_only() -> None:
    probe = parse_probe(HEADER, PROGRESS)
    assert probe.duration == pytest.approx(30.02)
    assert (probe.video_streams, probe.audio_streams, probe.frames) == (1, 1, 750)
    assert probe.codecs == ("h264", "aac")


def test_parse_probe_falls_back_to_the_last_timestamp() -> None:
    header = HEADER.replace("Duration: 00:00:30.02", "Duration: N/A")
    assert parse_probe(header, PROGRESS).duration == pytest.approx(29.96)


def test_parse_probe_refuses_what_has_no_streams() -> None:
    with pytest.raises(TranscodeError, match="no streams"):
        parse_probe("in.txt: Invalid data found when processing input\n", "")


@given(st.text(max_size=2000), st.text(max_size=500))
def test_parse_probe_on_arbitrary_text_raises_only_transcode_error(err: str, out: str) -> None:
    try:
        probe = parse_probe(err, out)
    except TranscodeError:
        return
    assert probe.duration >= 0
    assert probe.frames >= 0


@given(st.text(max_size=300))
def test_job_params_from_arbitrary_text_raise_only_transcode_error(text: str) -> None:
    try:
        params = JobParams.from_json(text)
    except TranscodeError:
        return
    assert JobParams.from_json(params.to_json()) == params


def test_job_params_round_trip_and_refusals() -> None:
    params = JobParams("libx265", "libopus", "1280:-1", ("-preset", "fast", "-crf", "23"))
    assert JobParams.from_json(params.to_json()) == params
    with pytest.raises(TranscodeError, match="not a codec name"):
        JobParams(vcodec="x; rm -rf /")
    with pytest.raises(TranscodeError, match="expected W:H"):
        JobParams(scale="big")
    with pytest.raises(TranscodeError, match="wrong types"):
        JobParams.from_json('{"extra": "-crf 23"}')
    with pytest.raises(TranscodeError, match="not JSON"):
        JobParams.from_json("{")


@pytest.mark.parametrize(
    "extra",
    [["-i", "x.mp4"], ["-vf", "movie=/etc/passwd"], ["out/../x.mkv"], ["http://evil"],
     ["-filter_complex", "x"], ["-f", "image2"], ["-map", "0"], ["\n"]],
)  # fmt: skip
def test_extra_args_that_touch_files_are_refused(extra: list[str]) -> None:
    with pytest.raises(TranscodeError, match="not allowed"):
        check_extra_args(extra)


def test_same_frames_unless_the_rate_changes() -> None:
    assert JobParams(extra=("-crf", "30")).same_frames
    assert not JobParams(extra=("-r", "30")).same_frames
    assert not JobParams(extra=("-vf", "fps=10")).same_frames


def test_transcode_argv_is_a_list_with_our_output_last() -> None:
    params = JobParams(scale="160:120", extra=("-preset", "ultrafast"))
    video = transcode_argv("ffmpeg", params, "video", Path("in.mkv"), Path("out.mkv"), threads=1)
    assert video[-3:] == ["-f", "matroska", "out.mkv"]
    assert video[video.index("-c:v") : video.index("-c:v") + 2] == ["-c:v", "libx264"]
    assert "scale=160:120" in video
    assert "-fps_mode" in video
    assert "-c:a" not in video
    audio = transcode_argv("ffmpeg", params, "audio", Path("a.mka"), Path("o.mkv"))
    assert "-c:a" in audio
    assert "-vf" not in audio


def test_split_and_join_argv() -> None:
    split = split_argv("ffmpeg", Path("in.mp4"), Path("/w"), 20.0)
    assert split[split.index("-segment_time") + 1] == "20"
    assert split[split.index("-map") + 1] == "0:v:0"
    joined = join_argv("ffmpeg", Path("list.txt"), Path("a.mkv"), Path("out.mp4"))
    assert joined[-1] == "out.mp4"
    assert joined.count("-map") == 2
    assert "-map" in join_argv("ffmpeg", Path("l"), None, Path("o"))


def test_concat_list_quotes_names() -> None:
    assert concat_list(["a.mkv", "it's.mkv"]) == "file 'a.mkv'\nfile 'it'\\''s.mkv'\n"
    with pytest.raises(TranscodeError):
        concat_list(["bad\nname"])
