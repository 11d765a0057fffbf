"""Audio files of a recording: how long one lasts, and one mixed-down file of several.

Each participant's audio track is recorded to its own Ogg/Opus file whose timestamps start at 0
(gaps, when a sender paused, are kept in the timestamps). The mix places each track at its
offset from the start of the recording and adds them with FFmpeg's ``amix`` filter (through
PyAV): ``aresample=async=1`` turns timestamp gaps into silence, ``adelay`` moves a track to its
offset. Files are read and written as streams, so a long session does not fill memory. Runs in
a worker thread (it decodes and encodes).
"""

from __future__ import annotations

import fractions
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from av.filter import Graph

RATE = 48000
_TIME_BASE = fractions.Fraction(1, RATE)


class MixError(Exception):
    """No track could be read."""


@dataclass(frozen=True)
class Track:
    path: Path
    offset: float  # seconds from the start of the recording


def probe_duration(path: Path) -> float | None:
    """The length in seconds of the media in ``path`` (from its last packet), or None if it
    cannot be read at all (empty, or not a media file)."""
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio or container.streams.video
            if not streams:
                return None
            stream = streams[0]
            first: int | None = None
            last = 0
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                if first is None:
                    first = packet.pts
                last = max(last, packet.pts + (packet.duration or 0))
            if first is None or stream.time_base is None:
                return None
            return float((last - first) * stream.time_base)
    except (av.FFmpegError, OSError, ValueError):
        return None


def _frames(path: Path) -> Iterator[av.AudioFrame]:
    """The decoded frames of an audio file as mono float at 48 kHz, timestamps from 0. A file
    cut off by a crash yields what could be decoded."""
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=RATE)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError):
        return
    with container:
        if not container.streams.audio:
            return
        stream = container.streams.audio[0]
        first: int | None = None
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                if first is None:
                    first = frame.pts
                at = int((frame.pts - first) * (frame.time_base or _TIME_BASE) * RATE)
                for out in resampler.resample(frame):
                    out.pts, out.time_base = at, _TIME_BASE
                    at += out.samples
                    yield out
        except av.FFmpegError:
            return  # the rest of a damaged file


def mix(tracks: Sequence[Track], out: Path) -> float:
    """Write the tracks, each at its offset, mixed into one Ogg/Opus file (mono, 48 kHz).
    Returns the mix's length in seconds. Raises :class:`MixError` if there is no track."""
    if not tracks:
        raise MixError("no tracks to mix")
    graph = Graph()
    amix = graph.add(
        "amix", f"inputs={len(tracks)}:normalize=0:duration=longest:dropout_transition=0"
    )
    sources: list[Any] = []
    for i, track in enumerate(tracks):
        source = graph.add_abuffer(
            format="fltp", sample_rate=RATE, layout="mono", time_base=_TIME_BASE
        )
        fill = graph.add("aresample", "async=1:first_pts=0")
        delay = graph.add("adelay", f"delays={max(0, round(track.offset * 1000))}:all=1")
        source.link_to(fill)
        fill.link_to(delay)
        delay.link_to(amix, 0, i)
        sources.append(source)
    shape = graph.add("aformat", f"sample_fmts=s16:channel_layouts=mono:sample_rates={RATE}")
    sink = graph.add("abuffersink")
    amix.link_to(shape)
    shape.link_to(sink)
    graph.configure()

    samples = 0
    with av.open(str(out), "w", format="ogg") as output:
        stream = output.add_stream("libopus", rate=RATE)
        stream.layout = "mono"

        def drain() -> None:
            nonlocal samples
            while True:
                try:
                    frame = sink.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                assert isinstance(frame, av.AudioFrame)
                samples += frame.samples
                frame.pts = None
                for packet in stream.encode(frame):
                    output.mux(packet)

        # Push the tracks a frame each in turn, so the filter never holds more than a few
        # frames of any of them.
        readers: list[Iterator[av.AudioFrame] | None] = [_frames(t.path) for t in tracks]
        while any(reader is not None for reader in readers):
            for i, reader in enumerate(readers):
                if reader is None:
                    continue
                frame = next(reader, None)
                if frame is None:
                    sources[i].push(None)
                    readers[i] = None
                else:
                    sources[i].push(frame)
            drain()
        drain()
        for packet in stream.encode(None):
            output.mux(packet)
    return samples / RATE


def cut(path: Path, seconds: float, out: Path) -> None:
    """Copy the first ``seconds`` of a one-stream media file to ``out`` (packets copied, not
    re-encoded): what was received after a recording stopped is not kept."""
    formats = {".ogg": "ogg", ".webm": "webm"}
    with av.open(str(path)) as source, av.open(str(out), "w", format=formats[path.suffix]) as dest:
        stream = (source.streams.audio or source.streams.video)[0]
        copy = dest.add_stream_from_template(stream)
        first: int | None = None
        try:
            for packet in source.demux(stream):
                if packet.dts is None:
                    continue
                if packet.pts is not None and stream.time_base is not None:
                    first = packet.pts if first is None else first
                    if (packet.pts - first) * stream.time_base >= seconds:
                        break
                packet.stream = copy
                dest.mux(packet)
        except av.FFmpegError:
            pass  # the rest of a damaged file
