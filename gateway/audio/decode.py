"""Decode any audio upload to 16 kHz mono float32, with limits enforced while decoding.

CPU-bound and blocking: callers in async code run `decode_audio` in a worker thread
(`await asyncio.to_thread(decode_audio, ...)` or `run_in_threadpool`).
"""

from __future__ import annotations

import io
import math
from typing import BinaryIO

import av
import av.error
import numpy as np

from gateway.audio.buffer import SampleBuffer
from gateway.audio.errors import (
    AudioTooLongError,
    EmptyAudioError,
    NotAudioError,
    UndecodableAudioError,
)
from gateway.audio.pcm import decode_pcm, fast_path_format
from gateway.audio.result import DecodedAudio
from gateway.audio.sniff import SNIFF_BYTES, describe_non_audio

__all__ = ["AUDIO_DEMUXERS", "SUPPORTED_FORMATS_HINT", "DecodedAudio", "decode_audio", "decode_audio_av"]

# Demuxers allowed to read user data: audio containers (and video containers that carry
# audio). Everything else FFmpeg could probe (images, playlists, subtitles) is refused.
AUDIO_DEMUXERS: tuple[str, ...] = (
    "wav", "w64", "flac", "mp3", "ogg", "matroska", "webm", "mov", "mp4", "m4a",
    "aac", "aiff", "caf", "au", "amr", "ac3", "eac3", "asf", "mpeg", "wv",
)  # fmt: skip
SUPPORTED_FORMATS_HINT = "wav, flac, mp3, ogg (vorbis/opus), opus, webm, m4a or mp4"
# Packets that fail to decode are skipped (one bad frame must not lose the rest of a file);
# past this many the file is treated as corrupt from there on.
_MAX_BAD_PACKETS = 100
# Containers whose declared duration is exact (Ogg's last granule, FLAC's STREAMINFO, the
# mp4 index, Matroska's Duration): a claim over the limit is refused before decoding.
# WAV and mp3 sizes are often placeholders or estimates, so those are only counted.
_DECLARED_DURATION_FORMATS = frozenset({"ogg", "flac", "mov", "matroska"})
# Downmix as a normalised average: identical channels keep their level instead of adding
# up (FFmpeg's float matrix would otherwise sum stereo to 1.4x and clip).
_DOWNMIX_OPTIONS = {"rematrix_maxval": "1.0"}
# Format detection keeps FFmpeg's default reach (1 MiB: an mp3 behind a large ID3 cover
# is still found); stream analysis stops at 32 KiB, enough for any audio codec's
# parameters, where the default 5 MB made opening cost more than decoding a short clip.
_OPEN_OPTIONS = {"format_whitelist": ",".join(AUDIO_DEMUXERS), "probesize": "32768"}
# Decoded frames are resampled in batches of about this many seconds (see _Resampled).
_BATCH_SECONDS = 0.5


def decode_audio(
    data: bytes | BinaryIO, *, max_seconds: float, target_rate: int = 16000
) -> DecodedAudio:
    """Decode, downmix and resample `data`; raise an `AudioError` subclass for bad input.

    Well-formed mono/stereo PCM WAV and FLAC are read by libsndfile and resampled by soxr
    (`gateway.audio.pcm`); everything else, and every file that path declines, by PyAV
    (`decode_audio_av`), which alone decides errors.

    - The content decides the format, never a file name (there is none here).
    - `max_seconds` is checked frame by frame while decoding: a small file that expands to
      hours (a decode bomb) is stopped as soon as it passes the limit, and memory never
      holds more than `max_seconds` of output audio.
    - Non-finite samples (NaN, +/-Inf) become 0 and samples are clipped to [-1, 1], so the
      model front-end never sees values it cannot take the log of.
    - A truncated or partly corrupt file yields the part that decodes (`truncated=True`);
      if nothing decodes, `UndecodableAudioError`.
    """
    if max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    source = _seekable(data)
    head = source.read(SNIFF_BYTES)
    source.seek(0)
    pcm_container = fast_path_format(head)
    if pcm_container is not None:
        decoded = decode_pcm(source, pcm_container, max_seconds=max_seconds, target_rate=target_rate)
        if decoded is not None:
            return decoded
        source.seek(0)
    return _decode_av(source, head, max_seconds, target_rate)


def decode_audio_av(
    data: bytes | BinaryIO, *, max_seconds: float, target_rate: int = 16000
) -> DecodedAudio:
    """The PyAV path for every format (libswresample resampling): what `decode_audio` did
    before PCM went through libsndfile. Tests compare the two paths on one corpus."""
    if max_seconds <= 0:
        raise ValueError("max_seconds must be positive")
    source = _seekable(data)
    head = source.read(SNIFF_BYTES)
    source.seek(0)
    return _decode_av(source, head, max_seconds, target_rate)


def _decode_av(source: BinaryIO, head: bytes, max_seconds: float, target_rate: int) -> DecodedAudio:
    if not head:
        raise EmptyAudioError("The audio file is empty.")
    what = describe_non_audio(head)
    if what is not None:
        raise NotAudioError(
            f"The file is {what}, not audio. Supported formats: {SUPPORTED_FORMATS_HINT}."
        )
    try:
        container = av.open(source, mode="r", options=_OPEN_OPTIONS)
    except (av.error.FFmpegError, ValueError) as err:
        raise UndecodableAudioError(
            f"The file could not be read as audio (unrecognised or corrupt). "
            f"Supported formats: {SUPPORTED_FORMATS_HINT}."
        ) from err
    with container:
        if not container.streams.audio:
            raise NotAudioError("The file contains no audio stream.")
        if _declared_seconds(container) > max_seconds:
            raise AudioTooLongError(max_seconds)
        return _decode_stream(container, container.streams.audio[0], max_seconds, target_rate)


def _seekable(data: bytes | BinaryIO) -> BinaryIO:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return io.BytesIO(data)
    if data.seekable():
        data.seek(0)
        return data
    # Demuxers seek (mp4 keeps its index at the end); callers bound the upload size.
    return io.BytesIO(data.read())


def _declared_seconds(container: av.container.InputContainer) -> float:
    """The duration the container states, where that is exact; 0 when unknown."""
    if container.format.name.split(",")[0] not in _DECLARED_DURATION_FORMATS:
        return 0.0
    return (container.duration or 0) / av.time_base


def _decode_stream(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    max_seconds: float,
    target_rate: int,
) -> DecodedAudio:
    codec = stream.codec_context
    source_rate = int(codec.sample_rate or 0)
    source_channels = int(codec.channels or 0)
    out = _Resampled(target_rate, max_seconds)
    decoded_seconds = 0.0
    bad_packets = 0
    truncated = False
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except (av.error.FFmpegError, ValueError):
                bad_packets += 1
                if bad_packets > _MAX_BAD_PACKETS:
                    truncated = True
                    break
                continue
            for frame in frames:
                if frame.samples == 0 or not frame.sample_rate:
                    continue
                decoded_seconds += frame.samples / frame.sample_rate
                if decoded_seconds > max_seconds:
                    raise AudioTooLongError(max_seconds)
                source_rate = source_rate or frame.sample_rate
                source_channels = source_channels or frame.layout.nb_channels
                out.push(frame)
    except (av.error.FFmpegError, ValueError):
        truncated = True  # the container broke off; keep what decoded before it
    if bad_packets:
        truncated = True
    samples = out.finish()
    if samples.size == 0:
        if truncated:
            raise UndecodableAudioError("The audio could not be decoded (corrupt or truncated).")
        raise EmptyAudioError("The audio file contains no samples.")
    return DecodedAudio(
        samples=samples,
        duration_s=samples.size / target_rate,
        source_rate=source_rate,
        source_channels=source_channels,
        container=container.format.name.split(",")[0],
        codec=codec.name,
        truncated=truncated,
    )


class _Resampled:
    """Downmixes and resamples frames into a SampleBuffer, rebuilding the resampler when
    the input format changes mid-stream (concatenated files, mp3 with varying rates).

    Decoded frames are short (a WAV packet is ~0.1 s), and each resampler call costs
    more than the samples in it: frames of one format are gathered into ~0.5 s batches
    and resampled as one frame.
    """

    def __init__(self, target_rate: int, max_seconds: float) -> None:
        self._rate = target_rate
        self._max_seconds = max_seconds
        # Input seconds are the real check; this bounds memory even if a decoder misreports
        # its frame sizes (one second of slack for resampler delay).
        self._max_output = math.ceil(max_seconds * target_rate) + target_rate
        self._buffer = SampleBuffer()
        self._resampler: av.AudioResampler | None = None
        self._key: tuple[str, str, int, int] | None = None
        self._pending: list[np.ndarray] = []  # frames of the current format, not yet resampled
        self._pending_samples = 0

    def push(self, frame: av.AudioFrame) -> None:
        key = (frame.format.name, frame.layout.name, frame.layout.nb_channels, frame.sample_rate)
        if key != self._key:
            self._flush()
            self._resampler = av.AudioResampler(
                format="flt", layout="mono", rate=self._rate, options=_DOWNMIX_OPTIONS
            )
            self._key = key
        # Planar: (channels, n); packed: (1, n * channels). Either joins along axis 1.
        self._pending.append(frame.to_ndarray())
        self._pending_samples += frame.samples
        if self._pending_samples >= frame.sample_rate * _BATCH_SECONDS:
            self._resample_pending()

    def finish(self) -> np.ndarray:
        self._flush()
        return self._buffer.to_array()

    def _resample_pending(self) -> None:
        if not self._pending:
            return
        assert self._resampler is not None and self._key is not None
        fmt, layout, _, rate = self._key
        joined = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending, axis=1)
        self._pending, self._pending_samples = [], 0
        batch = av.AudioFrame.from_ndarray(joined, format=fmt, layout=layout)
        batch.sample_rate = rate
        for resampled in self._resampler.resample(batch):
            self._append(resampled)

    def _flush(self) -> None:
        if self._resampler is not None:
            self._resample_pending()
            for resampled in self._resampler.resample(None):
                self._append(resampled)
            self._resampler = None

    def _append(self, frame: av.AudioFrame) -> None:
        chunk = frame.to_ndarray().reshape(-1)  # packed "flt" mono: shape (1, n)
        if len(self._buffer) + chunk.size > self._max_output:
            raise AudioTooLongError(self._max_seconds)
        if not np.isfinite(chunk).all():
            chunk = np.nan_to_num(chunk, nan=0.0, posinf=0.0, neginf=0.0)
        np.clip(chunk, -1.0, 1.0, out=chunk)
        self._buffer.append(chunk)
