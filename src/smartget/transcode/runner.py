"""ffmpeg as a subprocess: run with a deadline, probe, decode-check (the asyncio driver).

The commands and the parsing of what ffmpeg prints are pure (ffmpeg.py); this module
only starts the process, keeps its output bounded (the first and last 64 KiB of each
stream) and kills it when its deadline passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from smartget.errors import TranscodeError
from smartget.transcode.ffmpeg import (
    Capped,
    FFmpegResult,
    Probe,
    decode_argv,
    parse_probe,
    probe_argv,
)

__all__ = ["decode_check", "default_ffmpeg", "discard", "probe", "run_ffmpeg"]


def default_ffmpeg() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    path = imageio_ffmpeg.get_ffmpeg_exe()
    assert isinstance(path, str)
    return path


def discard(path: str | Path) -> None:
    """Remove a work file we own; already gone is fine."""
    with contextlib.suppress(OSError):
        os.unlink(path)


async def _drain(stream: asyncio.StreamReader | None, sink: Capped) -> None:
    if stream is None:
        return
    while data := await stream.read(65536):
        sink.add(data)


async def run_ffmpeg(
    argv: Sequence[str], *, within: float, cwd: Path | None = None
) -> FFmpegResult:
    """Run ``argv``; at most ``within`` seconds (then killed: TranscodeError).

    Output is kept bounded: the first and last 64 KiB of stdout and of stderr.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=cwd,
        )
    except OSError as exc:
        raise TranscodeError(f"cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
    out, err = Capped(), Capped()
    try:
        async with asyncio.timeout(within):
            await asyncio.gather(_drain(proc.stdout, out), _drain(proc.stderr, err))
            await proc.wait()
    except TimeoutError:
        raise TranscodeError(f"ffmpeg ran past its {within:g} s limit and was killed") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return FFmpegResult(proc.returncode, out.text(), err.text())


async def probe(ffmpeg: str, path: Path, within: float = 120.0) -> Probe:
    """Probe ``path``; TranscodeError with ffmpeg's reason if it is not readable media."""
    result = await run_ffmpeg(probe_argv(ffmpeg, path), within=within)
    if result.returncode != 0:
        raise TranscodeError(f"{path.name}: ffmpeg cannot read it: {result.error_text()}")
    try:
        return parse_probe(result.stderr, result.stdout)
    except TranscodeError as exc:
        raise TranscodeError(f"{path.name}: {exc}") from None


async def decode_check(ffmpeg: str, path: Path, within: float = 600.0) -> None:
    """Decode every frame of ``path``; TranscodeError if ffmpeg reports any error."""
    result = await run_ffmpeg(decode_argv(ffmpeg, path), within=within)
    if result.returncode != 0 or result.stderr.strip():
        raise TranscodeError(f"{path.name} does not decode cleanly: {result.error_text()}")
