"""decode_audio against real encoders' output and the hostile-input corpus."""

from __future__ import annotations

import io
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from gateway.audio import (
    AudioError,
    AudioTooLongError,
    DecodedAudio,
    EmptyAudioError,
    NotAudioError,
    UndecodableAudioError,
    decode_audio,
    has_speech,
)
from gateway.audio.decode import decode_audio_av
from gateway.audio.pcm import decode_pcm, fast_path_format
from gateway.errors import audio_api_error
from tests.fixtures.audio import (
    AUDIO_FORMATS,
    HOSTILE_MAX_SECONDS,
    EncodeAudio,
    HostileInput,
    Utterance,
)
from tests.fixtures.audio.bomb import opus_silence_bomb
from tests.fixtures.audio.speech import read_audio, write_wav

RATE = 16000
# Lossy codecs add encoder delay and pad to whole frames (AAC: up to 2 x 1024 samples, 0.26 s
# at 8 kHz): the decoded length may differ by this much. Lossless ones are checked exactly.
DURATION_TOLERANCE_S = 0.3


def _speech(utterances: list[Utterance]) -> Utterance:
    return utterances[3]  # "Whatever you want to do ...", about 4 s


@pytest.mark.parametrize("fmt", sorted(AUDIO_FORMATS))
@pytest.mark.parametrize(("rate", "channels"), [(None, None), (44100, 2), (48000, 1), (8000, 2)])
def test_every_format_rate_and_layout_decodes(
    utterances: list[Utterance], encode_audio: EncodeAudio, fmt: str, rate: int | None, channels: int | None
) -> None:
    speech = _speech(utterances)
    encoded = encode_audio(speech.path, fmt, rate=rate, channels=channels)
    decoded = decode_audio(encoded.read_bytes(), max_seconds=60)
    assert decoded.samples.dtype == np.float32 and decoded.samples.ndim == 1
    assert decoded.samples.size == pytest.approx(decoded.duration_s * RATE, abs=1)
    assert decoded.duration_s == pytest.approx(speech.duration_s, abs=DURATION_TOLERANCE_S)
    assert decoded.source_channels == (channels or 1)
    if fmt not in ("opus", "webm"):  # Opus always decodes at 48 kHz
        assert decoded.source_rate == (rate or RATE)
    assert np.abs(decoded.samples).max() > 0.3  # the speech is there, at its level
    assert has_speech(decoded.samples, RATE)


def test_surround_5_1_downmix_keeps_level(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    speech = _speech(utterances)
    original, _ = read_audio(speech.path)
    decoded = decode_audio(encode_audio(speech.path, "flac", channels=6).read_bytes(), max_seconds=60)
    assert decoded.source_channels == 6
    # Every channel carries the same signal: a normalised downmix gives it back unchanged.
    np.testing.assert_allclose(decoded.samples, original, atol=1e-3)


def test_mp3_behind_a_large_id3_cover_decodes(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    """Players' mp3s often start with a big ID3v2 tag (cover art), far past the 32 KiB of
    stream analysis: the audio behind it must still be found, whole."""
    speech = _speech(utterances)
    mp3 = encode_audio(speech.path, "mp3").read_bytes()
    picture = np.random.default_rng(0).integers(0, 256, 400_000, dtype=np.uint8).tobytes()
    body = b"\x00image/jpeg\x00\x03\x00" + picture  # APIC: encoding, MIME, type, description
    frame = b"APIC" + len(body).to_bytes(4, "big") + b"\x00\x00" + body
    size = len(frame)
    syncsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    tagged = b"ID3\x03\x00\x00" + syncsafe + frame + mp3
    decoded = decode_audio(tagged, max_seconds=60)
    plain = decode_audio(mp3, max_seconds=60)
    assert decoded.container == "mp3"
    np.testing.assert_array_equal(decoded.samples, plain.samples)


def test_lossless_16k_mono_is_bit_exact(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    speech = _speech(utterances)
    original, _ = read_audio(speech.path)
    for fmt in ("wav", "flac", "wav-s24", "wav-f32"):
        decoded = decode_audio(encode_audio(speech.path, fmt).read_bytes(), max_seconds=60)
        np.testing.assert_array_equal(decoded.samples, original, err_msg=fmt)


@pytest.mark.parametrize("source_rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency_and_duration(tmp_path: Path, source_rate: int) -> None:
    seconds, frequency = 3.0, 1000.0
    t = np.arange(int(seconds * source_rate)) / source_rate
    tone = (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)
    path = write_wav(tmp_path / "tone.wav", tone, source_rate, "FLOAT")
    decoded = decode_audio(path.read_bytes(), max_seconds=60)
    assert decoded.source_rate == source_rate
    assert decoded.duration_s == pytest.approx(seconds, abs=2 / RATE)
    spectrum = np.abs(np.fft.rfft(decoded.samples[RATE // 2 : -RATE // 2]))
    peak_hz = np.argmax(spectrum) * RATE / (decoded.samples.size - RATE)
    assert peak_hz == pytest.approx(frequency, abs=2.0)
    assert np.abs(decoded.samples[RATE // 2 : -RATE // 2]).max() == pytest.approx(0.5, abs=0.01)


def test_file_objects_and_bytes_give_the_same_audio(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    data = encode_audio(_speech(utterances).path, "m4a").read_bytes()
    from_bytes = decode_audio(data, max_seconds=60)
    with open(encode_audio(_speech(utterances).path, "m4a"), "rb") as handle:
        handle.seek(100)  # the decoder starts at the beginning wherever the caller left it
        from_file = decode_audio(handle, max_seconds=60)
    np.testing.assert_array_equal(from_bytes.samples, from_file.samples)
    assert from_file.container == "mov"


def _hostile_ids(item: HostileInput) -> str:
    return item.name


def test_hostile_inputs_get_their_expected_outcome(hostile_inputs: list[HostileInput]) -> None:
    assert len(hostile_inputs) >= 25
    for item in hostile_inputs:
        try:
            decoded = decode_audio(item.data, max_seconds=HOSTILE_MAX_SECONDS)
        except AudioError as error:
            assert audio_api_error(error).status_code == item.status, f"{item.name}: {error!r}"
            assert error.message and "Traceback" not in error.message
            continue
        assert item.status == 200, f"{item.name} decoded but should give {item.status}"
        assert decoded.samples.size > 0
        assert np.isfinite(decoded.samples).all(), item.name
        assert np.abs(decoded.samples).max() <= 1.0, item.name
        if item.duration_s is not None:
            assert decoded.duration_s == pytest.approx(item.duration_s, abs=DURATION_TOLERANCE_S), item.name
        if item.speech is not None:
            assert has_speech(decoded.samples, RATE) == item.speech, item.name


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", EmptyAudioError),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), NotAudioError),
        ("Grüße, ceci n'est pas un son.\n".encode(), NotAudioError),
        ("\ufeffid,text\n1,hello\n".encode(), NotAudioError),
        (b"#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n", NotAudioError),
        (bytes(range(256)) * 40, UndecodableAudioError),
    ],
    ids=["empty", "png", "utf8-text", "csv-with-bom", "playlist", "binary-junk"],
)
def test_error_classes_and_statuses(data: bytes, error: type[AudioError]) -> None:
    with pytest.raises(error) as caught:
        decode_audio(data, max_seconds=60)
    statuses = {EmptyAudioError: 400, NotAudioError: 415, UndecodableAudioError: 400}
    assert audio_api_error(caught.value).status_code == statuses[error]


def test_nan_and_inf_become_silence_not_noise(tmp_path: Path) -> None:
    signal = np.full(RATE, 0.25, dtype=np.float32)
    signal[1000:1010] = np.nan
    signal[5000] = np.inf
    signal[9000] = -np.inf
    signal[12000] = 7.5  # out of range: clipped
    decoded = decode_audio(write_wav(tmp_path / "bad.wav", signal, RATE, "FLOAT").read_bytes(), max_seconds=60)
    assert np.isfinite(decoded.samples).all()
    assert decoded.samples[1000:1010].tolist() == [0.0] * 10
    assert decoded.samples[5000] == 0.0 and decoded.samples[9000] == 0.0
    assert decoded.samples[12000] == 1.0
    assert decoded.samples[3000] == 0.25


def test_over_limit_audio_is_refused(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    speech = _speech(utterances)
    for fmt in ("wav", "mp3", "opus"):
        with pytest.raises(AudioTooLongError) as caught:
            decode_audio(encode_audio(speech.path, fmt).read_bytes(), max_seconds=speech.duration_s / 2)
        assert audio_api_error(caught.value).status_code == 413


def test_decode_bomb_stops_early_with_bounded_memory(tmp_path: Path) -> None:
    """A live WebM declares no duration: only counting decoded samples can stop it."""
    bomb = opus_silence_bomb(tmp_path / "bomb.webm", hours=3.0, container_format="webm")
    assert bomb.stat().st_size < 3_000_000
    limit_s = 60.0
    tracemalloc.start()
    started = time.process_time()
    try:
        with pytest.raises(AudioTooLongError):
            decode_audio(bomb.read_bytes(), max_seconds=limit_s)
        cpu_s = time.process_time() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # 3 h of 16 kHz float32 would be 690 MB; we may hold at most the limit plus one block.
    assert peak < limit_s * RATE * 4 + 3 * bomb.stat().st_size + 16 * 2**20, peak
    assert cpu_s < 2.0, cpu_s  # ~60 s of decoding, not 3 h


def test_declared_over_long_duration_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = opus_silence_bomb(tmp_path / "bomb.opus", hours=3.0)
    started = time.process_time()
    with pytest.raises(AudioTooLongError):
        decode_audio(bomb.read_bytes(), max_seconds=HOSTILE_MAX_SECONDS)
    assert time.process_time() - started < 0.5


def test_truncated_file_keeps_its_valid_part(utterances: list[Utterance], encode_audio: EncodeAudio) -> None:
    speech = _speech(utterances)
    full = encode_audio(speech.path, "flac").read_bytes()
    decoded = decode_audio(io.BytesIO(full[: len(full) // 2]), max_seconds=60)
    assert 0.5 < decoded.duration_s < speech.duration_s
    original, _ = read_audio(speech.path)
    np.testing.assert_array_equal(decoded.samples[:RATE], original[:RATE])


def test_decode_and_resample_throughput(
    long_recording, encode_audio: EncodeAudio, record_property: pytest.RecordProperty
) -> None:
    """Audio seconds decoded per CPU second (one core), reported and bounded below.

    Two minutes per format: long enough to time, short enough to encode quickly."""
    recording = long_recording(2)
    report = {}
    for fmt, rate in (("wav", None), ("flac", 44100), ("mp3", 44100), ("opus", None), ("m4a", 48000)):
        data = encode_audio(recording.path, fmt, rate=rate).read_bytes()
        started = time.process_time()
        decoded = decode_audio(data, max_seconds=HOSTILE_MAX_SECONDS)
        speed = decoded.duration_s / (time.process_time() - started)
        report[f"{fmt}@{rate or 'native'}"] = round(speed)
        assert decoded.duration_s == pytest.approx(recording.duration_s, abs=DURATION_TOLERANCE_S)
        assert speed > 50, (fmt, speed)  # far faster than real time, even on a shared core
    record_property("decode_x_realtime", report)
    print(f"\ndecode+resample, audio seconds per CPU second: {report}")


# The PCM fast path (libsndfile + soxr) against the PyAV path it replaced for PCM WAV/FLAC.
# Without resampling the samples are the same up to float rounding (the stereo average);
# soxr's filter differs from libswresample's only near the band edge (its passband ends at
# 91 % of 8 kHz, libswresample's at 97 %): the difference stays 30 dB below the speech.
_MIN_RESAMPLED_SNR_DB = 30.0


def _same_decode(new: DecodedAudio, old: DecodedAudio, what: str) -> None:
    assert (new.container, new.codec, new.source_rate, new.source_channels, new.truncated) == (
        old.container, old.codec, old.source_rate, old.source_channels, old.truncated
    ), what  # fmt: skip
    if new.source_rate == RATE:
        assert new.samples.size == old.samples.size, what
        np.testing.assert_allclose(new.samples, old.samples, rtol=0, atol=1e-6, err_msg=what)
        return
    assert abs(new.samples.size - old.samples.size) <= 1, what
    n = min(new.samples.size, old.samples.size)
    error = float(np.sum((new.samples[:n] - old.samples[:n]) ** 2.0))
    signal = float(np.sum(old.samples[:n] ** 2.0))
    assert signal == 0 or 10 * np.log10(signal / max(error, 1e-30)) >= _MIN_RESAMPLED_SNR_DB, what


def _outcome(decode: Callable[..., DecodedAudio], data: bytes) -> DecodedAudio | tuple[type[AudioError], str]:
    try:
        return decode(data, max_seconds=HOSTILE_MAX_SECONDS)
    except AudioError as error:
        return type(error), error.message


@pytest.mark.parametrize("fmt", sorted(AUDIO_FORMATS))
@pytest.mark.parametrize(("rate", "channels"), [(None, None), (44100, 2), (22050, 1), (8000, 2)])
def test_fast_and_av_paths_agree_on_every_format(
    utterances: list[Utterance], encode_audio: EncodeAudio, fmt: str, rate: int | None, channels: int | None
) -> None:
    data = encode_audio(_speech(utterances).path, fmt, rate=rate, channels=channels).read_bytes()
    _same_decode(decode_audio(data, max_seconds=60), decode_audio_av(data, max_seconds=60), fmt)


def test_hostile_corpus_gets_the_same_outcome_on_both_paths(hostile_inputs: list[HostileInput]) -> None:
    fast_path_items = 0
    for item in hostile_inputs:
        new, old = _outcome(decode_audio, item.data), _outcome(decode_audio_av, item.data)
        if isinstance(old, tuple) or isinstance(new, tuple):
            assert new == old, item.name  # the same error class and message
        else:
            _same_decode(new, old, item.name)
        fast_path_items += fast_path_format(item.data[:64]) is not None
    assert fast_path_items >= 15  # the corpus really exercises the fast path's refusals


@pytest.mark.parametrize(
    ("fmt", "channels", "taken"),
    [("wav", None, True), ("wav-u8", None, True), ("wav-f32", 2, True), ("flac", None, True),
     ("wav", 6, False), ("flac", 6, False), ("mp3", None, False), ("ogg", None, False)],
)  # fmt: skip
def test_which_files_take_the_fast_path(
    utterances: list[Utterance], encode_audio: EncodeAudio, fmt: str, channels: int | None, taken: bool
) -> None:
    data = encode_audio(_speech(utterances).path, fmt, channels=channels).read_bytes()
    container = fast_path_format(data[:64])
    decoded = None if container is None else decode_pcm(io.BytesIO(data), container, max_seconds=60, target_rate=RATE)
    assert (decoded is not None) == taken


def test_fast_path_declines_truncated_flac_and_refuses_long_audio(
    utterances: list[Utterance], encode_audio: EncodeAudio
) -> None:
    speech = _speech(utterances)
    full = encode_audio(speech.path, "flac").read_bytes()
    assert decode_pcm(io.BytesIO(full[: len(full) // 2]), "flac", max_seconds=60, target_rate=RATE) is None
    with pytest.raises(AudioTooLongError):
        decode_pcm(io.BytesIO(speech.path.read_bytes()), "wav", max_seconds=speech.duration_s / 2, target_rate=RATE)
