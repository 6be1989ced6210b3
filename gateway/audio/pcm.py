"""The fast path for uncompressed audio: PCM WAV and FLAC through libsndfile, soxr resampling.

PyAV hands Python one ~0.1 s packet at a time (demux, decode, to_ndarray, resample per
packet), which cost more than the audio work itself for PCM. libsndfile reads large
blocks straight into float32 and soxr resamples them in one stream, with no per-packet
Python. Only files this path reproduces exactly (a well-formed mono or stereo PCM WAV or
FLAC whose frames all read) take it; anything else, including every malformed file, goes
back to the PyAV path, so errors and edge cases keep one implementation.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import soundfile
import soxr

from gateway.audio.errors import AudioTooLongError
from gateway.audio.result import DecodedAudio

# libsndfile subtype -> the FFmpeg codec name the PyAV path reports for the same file.
_WAV_CODECS = {
    "PCM_U8": "pcm_u8",
    "PCM_16": "pcm_s16le",
    "PCM_24": "pcm_s24le",
    "PCM_32": "pcm_s32le",
    "FLOAT": "pcm_f32le",
    "DOUBLE": "pcm_f64le",
}
_FLAC_SUBTYPES = frozenset({"PCM_S8", "PCM_16", "PCM_24"})
# soxr's "HQ" recipe: 20-bit precision, passband to 91 % of the output Nyquist (7.3 kHz
# at 16 kHz), the library default.
RESAMPLE_QUALITY = "HQ"


def fast_path_format(head: bytes) -> str | None:
    """"wav" or "flac" when the leading bytes are a RIFF/WAVE or FLAC stream, else None."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    return None


def decode_pcm(
    source: BinaryIO, container: str, *, max_seconds: float, target_rate: int
) -> DecodedAudio | None:
    """Decode a PCM WAV / FLAC stream, or None where the PyAV path must decide.

    None (never an error) for: anything libsndfile refuses or reads short (truncated,
    corrupt, header-only), no frames, more than two channels (FFmpeg's surround downmix
    weights stay in one place), codecs FFmpeg names differently. Over-long audio is
    refused from the header, before any sample is read.
    """
    try:
        with soundfile.SoundFile(source) as reader:
            codec = _codec(container, reader.format, reader.subtype)
            rate, channels, frames = reader.samplerate, reader.channels, reader.frames
            if codec is None or channels not in (1, 2) or frames <= 0 or rate <= 0:
                return None
            if frames / rate > max_seconds:
                raise AudioTooLongError(max_seconds)
            samples = _read_resampled(reader, rate, channels, frames, max_seconds, target_rate)
    except (soundfile.LibsndfileError, RuntimeError, ValueError, EOFError):
        return None
    if samples is None:
        return None
    return DecodedAudio(
        samples=samples,
        duration_s=samples.size / target_rate,
        source_rate=rate,
        source_channels=channels,
        container=container,
        codec=codec,
    )


def _codec(container: str, major: str, subtype: str) -> str | None:
    if container == "wav" and major == "WAV":
        return _WAV_CODECS.get(subtype)
    if container == "flac" and major == "FLAC" and subtype in _FLAC_SUBTYPES:
        return "flac"
    return None


def _read_resampled(
    reader: soundfile.SoundFile, rate: int, channels: int, frames: int, max_seconds: float, target_rate: int
) -> np.ndarray | None:
    """Every frame, downmixed, resampled, cleaned; None when fewer frames than declared read.

    One read and one resampler call for the whole file: the upload limit bounds the source
    (a 25 MB 8-bit upload is 100 MB of float32 at most), and per-call costs vanish.
    """
    block = reader.read(frames, dtype="float32", always_2d=False)
    if block.shape[0] != frames:
        return None  # the data ended before the header's frame count: PyAV decides
    mono = _downmix(block) if channels == 2 else block
    # Non-finite samples become 0 before filtering (a NaN would smear over the resampler's
    # whole block), and the result is clipped to [-1, 1] as on the PyAV path.
    _clean(mono)
    if rate != target_rate:
        mono = soxr.resample(mono, rate, target_rate, quality=RESAMPLE_QUALITY)
        if mono.size > math.ceil(max_seconds * target_rate) + target_rate:
            raise AudioTooLongError(max_seconds)
        _clean(mono)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _downmix(block: np.ndarray) -> np.ndarray:
    """[frames, 2] -> mono as the average (FFmpeg's normalised 0.5 / 0.5 matrix)."""
    mono = block[:, 0] + block[:, 1]
    mono *= np.float32(0.5)
    return mono


def _clean(samples: np.ndarray) -> None:
    """In place: NaN and +/-Inf to 0, everything into [-1, 1]."""
    if not np.isfinite(samples).all():
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    np.clip(samples, -1.0, 1.0, out=samples)
