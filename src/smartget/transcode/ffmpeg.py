"""ffmpeg without running it: job parameters, argv builders, output parsing (sans-IO).

Every command is an argv list (never a shell string), run by runner.py with a deadline
and bounded output. The binary is the one shipped in the ``imageio-ffmpeg`` wheel unless
``--ffmpeg PATH`` names another (issue 8). That wheel ships no ffprobe, so probing is
done with ffmpeg itself: one ``-c copy -f null`` pass reads every packet (cheap) and
prints the input's header on stderr (streams, ``Duration:``) and ``frame=N`` on the
``-progress`` channel (:func:`parse_probe`). A full decode pass (``-v error -f null``)
is the "reads without errors" check on the joined output.

The pipeline (seed 001, plugins/ffmpeg.py: "对视频进行切片，分发，转码，收集合并"):

1. :func:`split_argv`: the first video stream, stream-copied into Matroska segments by
   the segment muxer; with ``-c copy`` it can cut only on keyframes, so each segment
   starts with one and decodes alone.
2. :func:`extract_audio_argv`: every audio stream, stream-copied into one ``.mka``.
   Audio is one task of its own: cutting it at video keyframes would leave encoder
   priming at every joint and the output would drift by ~20 ms a segment.
3. :func:`transcode_argv` (worker): one task with the job's parameters.
4. :func:`join_argv`: the concat demuxer over the transcoded video segments plus the
   transcoded audio, stream copy, into OUTPUT's container.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smartget.config import setting
from smartget.errors import TranscodeError

__all__ = [
    "MAX_OUTPUT",
    "SEGMENT_FORMAT",
    "Capped",
    "FFmpegResult",
    "JobParams",
    "Probe",
    "check_extra_args",
    "concat_list",
    "decode_argv",
    "extract_audio_argv",
    "join_argv",
    "parse_probe",
    "preflight_argv",
    "probe_argv",
    "split_argv",
    "transcode_argv",
]

MAX_OUTPUT = 64 * 1024  # bytes kept from the head and from the tail of each stream
MAX_PARAMS_JSON = 8 * 1024
SEGMENT_FORMAT = "matroska"  # holds any codec, and ffmpeg writes exact durations into it
_BASE = ["-hide_banner", "-nostdin", "-y"]


# -- job parameters --------------------------------------------------------------------

# Options that would read or write files other than the ones we name, or that take the
# command away from us. Workers refuse them (check_extra_args) besides any "/" at all.
_FORBIDDEN_OPTIONS = frozenset(
    {
        "-i", "-f", "-y", "-n", "-map", "-progress", "-report", "-attach",
        "-dump_attachment", "-filter_script", "-filter_complex_script", "-vstats_file",
        "-passlogfile", "-stats_period", "-nostdin", "-stdin", "-protocol_whitelist",
    }
)  # fmt: skip
_SAFE_ARG = re.compile(r"[A-Za-z0-9_.:=,+\-@%*' ]{0,256}")


def check_extra_args(extra: Sequence[str]) -> None:
    """Refuse extra arguments that could touch files or protocols (workers run them).

    ffmpeg options can name files and URLs; the worker runs ffmpeg in its own work
    directory, and arguments may hold no "/" or "\\", no "..", and none of the options
    that open files or change the output. TranscodeError says which argument and why.
    """
    if len(extra) > 64:
        raise TranscodeError(f"too many extra arguments: {len(extra)} (at most 64)")
    for arg in extra:
        if not isinstance(arg, str) or not _SAFE_ARG.fullmatch(arg) or ".." in arg:
            raise TranscodeError(
                f"extra argument {str(arg)[:80]!r} is not allowed: only letters, digits, "
                "spaces and _.:=,+-@%*' (no paths, no URLs), at most 256 characters"
            )
        if arg.split(":", 1)[0] in _FORBIDDEN_OPTIONS or arg.startswith("-filter_complex"):
            raise TranscodeError(f"extra argument {arg!r} is not allowed (it opens files)")


_RATE_OPTIONS = ("-r", "-fps_mode", "-vsync", "-frames", "-vframes", "-t", "-ss", "-to")


@dataclass(frozen=True)
class JobParams:
    """What a job asks of every worker: codecs, scale, extra ffmpeg arguments."""

    vcodec: str = setting("libx264", "Video encoder.")
    acodec: str = setting("aac", "Audio encoder.")
    scale: str | None = setting(  # "W:H" as ffmpeg's scale filter takes it
        None, "Resize, e.g. 1280:720 (-1 keeps ratio).", metavar="W:H"
    )
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name, value in (("vcodec", self.vcodec), ("acodec", self.acodec)):
            if not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", value):
                raise TranscodeError(f"--{name} {value[:80]!r} is not a codec name")
        if self.scale is not None and not re.fullmatch(r"-?[0-9]{1,5}:-?[0-9]{1,5}", self.scale):
            raise TranscodeError(f"--scale {self.scale[:80]!r}: expected W:H, e.g. 1280:720")
        check_extra_args(self.extra)

    @property
    def same_frames(self) -> bool:
        """True when the job keeps every frame (no rate or trim options in ``extra``)."""
        return not any(
            a.split(":", 1)[0] in _RATE_OPTIONS or "fps=" in a or "select=" in a for a in self.extra
        )

    def to_json(self) -> str:
        data = {"vcodec": self.vcodec, "acodec": self.acodec, "scale": self.scale}
        return json.dumps({**data, "extra": list(self.extra)}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> JobParams:
        """Parse a ``params`` header; TranscodeError for anything malformed."""
        if len(text) > MAX_PARAMS_JSON:
            raise TranscodeError(f"job parameters longer than {MAX_PARAMS_JSON} characters")
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TranscodeError(f"job parameters are not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise TranscodeError("job parameters must be a JSON object")
        extra = data.get("extra", [])
        scale = data.get("scale")
        vcodec, acodec = data.get("vcodec", "libx264"), data.get("acodec", "aac")
        if (
            not isinstance(extra, list)
            or not all(isinstance(a, str) for a in extra)
            or not isinstance(vcodec, str)
            or not isinstance(acodec, str)
            or not (scale is None or isinstance(scale, str))
        ):
            raise TranscodeError("job parameters have the wrong types")
        return cls(vcodec, acodec, scale, tuple(extra))


# -- argv builders ---------------------------------------------------------------------


def probe_argv(ffmpeg: str, path: Path) -> list[str]:
    """Read every packet without decoding: header on stderr, ``frame=`` on stdout."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-i", str(path), "-map", "0", "-c", "copy",
            "-f", "null", "-progress", "pipe:1", "-"]  # fmt: skip


def decode_argv(ffmpeg: str, path: Path) -> list[str]:
    """Decode every stream; any line on stderr at level ``error`` is a failure."""
    return [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-map", "0", "-f", "null", "-"]


def split_argv(ffmpeg: str, source: Path, out_dir: Path, segment_seconds: float) -> list[str]:
    """Cut the first video stream into ``seg%05d.mkv`` on keyframes (stream copy)."""
    return [*[ffmpeg, *_BASE], "-v", "error", "-i", str(source), "-map", "0:v:0", "-c", "copy",
            "-f", "segment", "-segment_time", f"{segment_seconds:g}", "-reset_timestamps", "1",
            "-segment_format", SEGMENT_FORMAT, str(out_dir / "seg%05d.mkv")]  # fmt: skip


def extract_audio_argv(ffmpeg: str, source: Path, out: Path) -> list[str]:
    """Every audio stream, stream copy, into one Matroska audio file."""
    return [ffmpeg, *_BASE, "-v", "error", "-i", str(source), "-map", "0:a", "-vn", "-c", "copy",
            "-f", SEGMENT_FORMAT, str(out)]  # fmt: skip


def transcode_argv(
    ffmpeg: str, params: JobParams, kind: str, source: Path, out: Path, threads: int = 0
) -> list[str]:
    """The worker's command for one task (``kind`` is ``video`` or ``audio``)."""
    argv = [ffmpeg, *_BASE, "-v", "error", "-i", str(source), "-map", "0"]
    if kind == "video":
        argv += ["-c:v", params.vcodec]
        if params.scale:
            argv += ["-vf", f"scale={params.scale}"]
    else:
        argv += ["-c:a", params.acodec]
    if threads:
        argv += ["-threads", str(threads)]
    argv += list(params.extra)
    if kind == "video" and params.same_frames:
        argv += ["-fps_mode", "passthrough"]  # one output frame per input frame
    return [*argv, "-f", SEGMENT_FORMAT, str(out)]


def preflight_argv(ffmpeg: str, params: JobParams) -> list[str]:
    """A 0.2 s synthetic clip through the job's parameters: does ffmpeg accept them?"""
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-v", "error",
            "-f", "lavfi", "-i", "testsrc=duration=0.2:size=320x240:rate=25",
            "-f", "lavfi", "-i", "sine=duration=0.2", "-map", "0", "-map", "1",
            "-c:v", params.vcodec, "-c:a", params.acodec]  # fmt: skip
    if params.scale:
        argv += ["-vf", f"scale={params.scale}"]
    return [*argv, *params.extra, "-f", SEGMENT_FORMAT, "-"]


def concat_list(names: Sequence[str]) -> str:
    """The concat demuxer's list: one ``file 'NAME'`` a line (names relative to the list)."""
    lines = []
    for name in names:
        if "\n" in name or "\r" in name:
            raise TranscodeError(f"segment name {name!r} holds a line break")
        quoted = name.replace("'", "'\\''")
        lines.append(f"file '{quoted}'\n")
    return "".join(lines)


def join_argv(ffmpeg: str, list_path: Path, audio: Path | None, out: Path) -> list[str]:
    """Concatenate the video segments (concat demuxer) and add the audio, stream copy."""
    argv = [ffmpeg, *_BASE, "-v", "error", "-f", "concat", "-safe", "0", "-i", str(list_path)]
    if audio is not None:
        argv += ["-i", str(audio), "-map", "0:v", "-map", "1:a"]
    else:
        argv += ["-map", "0:v"]
    return [*argv, "-c", "copy", str(out)]


# -- results ----------------------------------------------------------------------------


@dataclass
class FFmpegResult:
    returncode: int
    stdout: str
    stderr: str

    def error_text(self, limit: int = 600) -> str:
        """The last meaningful lines of stderr, for an error message."""
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        text = " / ".join(lines[-4:])
        return text[-limit:] if text else f"exit status {self.returncode}"


@dataclass
class Capped:
    """The first and last ``MAX_OUTPUT`` bytes of a stream (the middle is cut)."""

    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    cut: bool = False

    def add(self, data: bytes) -> None:
        room = MAX_OUTPUT - len(self.head)
        self.head += data[:room]
        if len(data) > room:
            self.cut = True
            self.tail = (self.tail + data[room:])[-MAX_OUTPUT:]

    def text(self) -> str:
        data = bytes(self.head) + (b"\n...\n" + bytes(self.tail) if self.cut else b"")
        return data.decode("utf-8", "replace")


# -- probing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """What a probe pass found in a media file."""

    duration: float  # seconds, from the container header (else the last timestamp)
    video_streams: int
    audio_streams: int
    frames: int  # packets of the first video stream (one per frame for video codecs)
    codecs: tuple[str, ...] = ()


_DURATION = re.compile(r"Duration: (\d{1,6}):(\d{2}):(\d{2}(?:\.\d{1,6})?)")
_STREAM = re.compile(r"^\s*Stream #0:\d{1,4}\S*: (Video|Audio|Subtitle|Data|Attachment): (\w+)?")
_FRAME = re.compile(r"^frame=\s*(\d{1,12})\s*$", re.MULTILINE)
_OUT_TIME = re.compile(r"^out_time_us=(\d{1,15})\s*$", re.MULTILINE)


def parse_probe(stderr: str, progress: str) -> Probe:
    """Read a probe pass's stderr (header) and ``-progress`` output.

    Raises TranscodeError when the header names no input streams or no duration.
    Only the input's section counts: stderr also describes the null output.
    """
    section = stderr[: 2 * MAX_OUTPUT].split("\nOutput #0", 1)[0].split("\nStream mapping:", 1)[0]
    kinds: list[str] = []
    codecs: list[str] = []
    for line in section.splitlines():
        match = _STREAM.match(line)
        if match:
            kinds.append(match.group(1))
            codecs.append(match.group(2) or "?")
    if not kinds:
        raise TranscodeError("ffmpeg found no streams in it")
    duration: float | None = None
    found = _DURATION.search(section)
    if found:
        hours, minutes, seconds = found.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    else:
        times = _OUT_TIME.findall(progress)
        if times:
            duration = int(times[-1]) / 1e6
    if duration is None:
        raise TranscodeError("ffmpeg found no duration in it")
    frames = _FRAME.findall(progress)
    return Probe(
        duration=duration,
        video_streams=kinds.count("Video"),
        audio_streams=kinds.count("Audio"),
        frames=int(frames[-1]) if frames else 0,
        codecs=tuple(codecs),
    )
