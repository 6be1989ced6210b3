"""`python -m bench wer`: words through the real stack (Triton + gateway), on the held-out set.

The demo model's held-out sentences (never trained on) are spoken by espeak-ng's library (which
times each word), clean, followed by the silence its command line writes, and sent to the
gateway as 16 kHz WAV:

- short clips per voice: the held-out voices (two accents, two voice variants never used in
  training) and one training voice for reference; WER per voice and over all held-out voices;
- streaming against non-streaming: the same clips with `stream=true`; the texts must be equal;
- live captions: the held-out clips (trimmed to their sound) streamed through `/v1/realtime` as
  24 kHz pcm16 at real-time pace, `--concurrency` sessions side by side, 1.2 s between clips,
  server_vad turns: WER of each session's transcripts in commit order, and the turns counted;
- a long recording (`--long-minutes`, default 6) made of held-out clips with pauses: WER of the
  whole transcript as `json` gives it (cut at pauses as the served model asks: the demo model's
  export ends a piece at every pause, export/demo.py `DEMO_PIECE_PAUSE_S`; no words lost or
  repeated where pieces are cut), as `json` with the real model's cutting (pieces of up to
  40 s ending only at 3 s pauses, asked by `chunking_strategy`: `long_wer_long_pieces`), and as
  `verbose_json` gives it (caption-sized cues, most of them one clip: `long_wer_cues`), and every edge of the verbose_json segments and the SRT/VTT cues
  checked against the words' audible extents (espeak-ng's word timings, cut to where the
  word's samples are loud): an edge there is inside a word, an edge in a pause between words
  (a clip's, or one at a comma) is not;
- the same long recording over pink background noise (`--noise-snr-db` under its speech): espeak
  pauses are digital silence, a real room or line is not, and cutting that judges silence on
  the speech's peak alone finds none there. Its `json` and `verbose_json` WER and its edges.

Normalisation: canary_qwen.wer (lower case, punctuation dropped). The section goes into
bench/results/latest.json under "wer". These figures say the pipeline gets words right on
synthetic speech; they are not Canary-Qwen-2.5B's accuracy on real speech.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import soundfile
import srt
import webvtt
from pydantic import Field, PositiveFloat, PositiveInt
from pydantic_settings import SettingsConfigDict

from bench import report
from bench.clients import MODEL_ID
from bench.corpus import LOUD, audible
from bench.realtime import SessionResult, stream_of, stream_session
from bench.servers import gateway, triton
from bench.settings import CommandSettings
from canary_qwen.mel import SAMPLE_RATE
from canary_qwen.wer import normalize, word_error_rate
from gateway.audio import CutOptions

log = logging.getLogger("bench.wer")
REFERENCE_VOICE = "en-us"  # a training voice, for comparison


class WerSettings(CommandSettings):
    """`python -m bench wer`: held-out WER through the gateway."""

    model_config = SettingsConfigDict(env_prefix="BENCH_WER_", cli_prog_name="python -m bench wer")

    sentences: PositiveInt = Field(default=24, description="Held-out sentences per voice for the short clips.")
    long_minutes: PositiveFloat = Field(default=6.0, description="Length of the long recording.")
    concurrency: PositiveInt = Field(default=8, description="Requests in flight, and live-caption sessions side by side.")
    seed: int = Field(default=3, description="Which sentences and pauses.")
    noise_snr_db: float = Field(
        default=25.0, description="Pink background noise of the noisy long recording, in dB under its speech's power."
    )


# The silence espeak-ng's command line writes after the speech (0.34-0.35 s) and its library does
# not: the demo model loops on a clip that stops as its last word does (short-clip WER 1.16
# against 0.44 with it, 2026-12-06), so the clips end as the files espeak-ng writes end.
TRAILING_SILENCE_S = 0.35


@dataclass(frozen=True)
class Clip:
    voice: str
    text: str
    samples: np.ndarray
    words: tuple[tuple[float, float], ...] = ()  # each word's audible extent in the clip, seconds


# espeak-ng's word event can come a few ms before the previous word's sound ends: sound that
# ends this soon after a span's start, silence following, is the previous word's tail.
TAIL_S, GAP_S = 0.02, 0.005


def audible_words(samples: np.ndarray, spans: list[tuple[float, float]]) -> tuple[tuple[float, float], ...]:
    """Each word span (start, end in seconds; espeak's spans run on to the next word's start, over
    any pause) cut to its first and last loud sample, the previous word's tail given back to
    it; a span with no sound is dropped."""
    out: list[tuple[float, float]] = []
    tail, gap = int(TAIL_S * SAMPLE_RATE), int(GAP_S * SAMPLE_RATE)
    for start, end in spans:
        a, b = int(start * SAMPLE_RATE), min(samples.size, int(np.ceil(end * SAMPLE_RATE)))
        loud = np.flatnonzero(np.abs(samples[a:b]) > LOUD)
        after_gap = np.flatnonzero(np.diff(loud) > gap)
        if out and after_gap.size and loud[after_gap[0]] < tail:
            out[-1] = (out[-1][0], (a + loud[after_gap[0]] + 1) / SAMPLE_RATE)
            loud = loud[after_gap[0] + 1 :]
        if loud.size:
            out.append(((a + loud[0]) / SAMPLE_RATE, (a + loud[-1] + 1) / SAMPLE_RATE))
    return tuple(out)


# Microphones and their preamps roll off under about this. Pink noise that went on down to a
# few millihertz put most of its power in a slow drift no recording has.
NOISE_LOW_HZ = 50.0


def with_background(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """`samples` over pink noise (power falling 3 dB an octave, like a room's hum and hiss) from
    NOISE_LOW_HZ up, `snr_db` under the power of their sound (the samples above LOUD)."""
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(samples.size // 2 + 1) + 1j * rng.standard_normal(samples.size // 2 + 1)
    low = int(NOISE_LOW_HZ * samples.size / SAMPLE_RATE)  # the first bin at NOISE_LOW_HZ
    spectrum[:low] = 0
    spectrum[low:] /= np.sqrt(np.arange(low, spectrum.size))
    noise = np.fft.irfft(spectrum, samples.size)
    speech_power = float(np.mean(np.square(samples[np.abs(samples) > LOUD])))
    noise *= np.sqrt(speech_power / 10 ** (snr_db / 10) / np.mean(np.square(noise)))
    return np.clip(samples + noise, -1, 1).astype(np.float32)


def wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def short_clips(settings: WerSettings) -> list[Clip]:
    from export.train.corpus import load_corpus
    from export.train.speech import HELD_OUT_VOICES, Voice, speak_timed

    held_out = list(load_corpus().held_out)
    rng = np.random.default_rng(settings.seed)
    clips = []
    for voice in (*HELD_OUT_VOICES, REFERENCE_VOICE):
        for i in rng.choice(len(held_out), min(settings.sentences, len(held_out)), replace=False):
            samples, timed = speak_timed(held_out[int(i)], Voice(voice))
            words = audible_words(samples, [(w.start_s, w.end_s) for w in timed])
            samples = np.concatenate([samples, np.zeros(int(TRAILING_SILENCE_S * SAMPLE_RATE), dtype=np.float32)])
            clips.append(Clip(voice, held_out[int(i)], samples, words))
    return clips


@dataclass(frozen=True)
class LongRecording:
    samples: np.ndarray
    text: str
    words: list[tuple[float, float]]  # each word's audible extent, seconds


def long_recording(clips: list[Clip], minutes: float, seed: int) -> LongRecording:
    """Held-out clips (trimmed to their audible extent) in a row with pauses of 0.4-1.5 s."""
    rng = np.random.default_rng(seed)
    parts = [np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    at, words, texts = parts[0].size, [], []
    pool = [c for c in clips if c.voice != REFERENCE_VOICE]
    while at < minutes * 60 * SAMPLE_RATE:
        clip = pool[int(rng.integers(len(pool)))]
        sound = audible(clip.samples)
        speech = clip.samples[sound]
        pause = np.zeros(int(rng.uniform(0.4, 1.5) * SAMPLE_RATE), dtype=np.float32)
        shift = (at - sound.start) / SAMPLE_RATE
        words += [(a + shift, b + shift) for a, b in clip.words]
        texts.append(clip.text)
        parts += [speech, pause]
        at += speech.size + pause.size
    return LongRecording(np.concatenate(parts), " ".join(texts), words)


def edges_inside_speech(edges: list[float], words: list[tuple[float, float]]) -> int:
    """Segment/cue edges that fall strictly inside a word's audible extent (not in a pause)."""
    return sum(any(a < t < b for a, b in words) for t in edges)


# The real model's cutting (only the default long pauses end a piece), asked of any model.
LONG_PIECES = json.dumps({"type": "server_vad", "silence_duration_ms": round(1000 * CutOptions().max_pause_s)})


async def _transcribe(
    client: httpx.AsyncClient, wav: bytes, response_format: str = "json", chunking: str | None = None
) -> str:
    data = {"model": MODEL_ID, "response_format": response_format}
    if chunking is not None:
        data["chunking_strategy"] = chunking
    response = await client.post("/v1/audio/transcriptions", files={"file": ("clip.wav", wav, "audio/wav")}, data=data)
    if response.status_code != 200:
        raise RuntimeError(f"{response_format}: {response.status_code} {response.text[:300]}")
    return response.text if response_format != "json" else str(response.json()["text"])


async def _transcribe_stream(client: httpx.AsyncClient, wav: bytes) -> str:
    deltas, done = [], None
    async with client.stream(
        "POST", "/v1/audio/transcriptions",
        files={"file": ("clip.wav", wav, "audio/wav")},
        data={"model": MODEL_ID, "stream": "true"},
    ) as response:  # fmt: skip
        if response.status_code != 200:
            raise RuntimeError(f"stream: {response.status_code} {(await response.aread())[:300]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("type") == "transcript.text.delta":
                deltas.append(event["delta"])
            elif event.get("type") == "transcript.text.done":
                done = event["text"]
    if done is None:
        raise RuntimeError("stream ended without transcript.text.done")
    if "".join(deltas) != done:
        raise RuntimeError("stream deltas do not join to the final text")
    return str(done)


# A live stream's layout: bench realtime's pause between sentences and server_vad's default turn end.
REALTIME_GAP_S = 1.2
REALTIME_SILENCE_MS = 500
REALTIME_CHUNK_MS = 100


def realtime_groups(clips: list[Clip], sessions: int) -> list[list[Clip]]:
    """The held-out clips dealt round-robin to `sessions` live streams (none left empty)."""
    held = [c for c in clips if c.voice != REFERENCE_VOICE]
    return [group for group in (held[i::sessions] for i in range(sessions)) if group]


async def _realtime(base_url: str, groups: list[list[Clip]]) -> list[SessionResult]:
    url = base_url.replace("http://", "ws://", 1) + "/v1/realtime?intent=transcription"
    streams = [
        stream_of([c.samples[audible(c.samples)] for c in group], REALTIME_GAP_S, REALTIME_CHUNK_MS) for group in groups
    ]
    stagger = REALTIME_GAP_S / len(streams)  # turns of different sessions do not all end at once
    return list(await asyncio.gather(*(
        stream_session(url, {}, stream, REALTIME_SILENCE_MS, i * stagger) for i, stream in enumerate(streams))))


async def _timed_formats(client: httpx.AsyncClient, wav: bytes) -> dict[str, Any]:
    """The recording as json (cut as the model asks), verbose_json, SRT and VTT."""
    return {
        "json": await _transcribe(client, wav),
        "verbose": json.loads(await _transcribe(client, wav, "verbose_json")),  # caption-sized cues
        "srt": await _transcribe(client, wav, "srt"),
        "vtt": await _transcribe(client, wav, "vtt"),
    }


async def _measure(
    base_url: str, clips: list[Clip], long: LongRecording, noisy: np.ndarray, concurrency: int
) -> dict[str, Any]:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=1800.0) as client:

        async def both(clip: Clip) -> tuple[str, str]:
            async with limit:
                wav = wav_bytes(clip.samples)
                return await _transcribe(client, wav), await _transcribe_stream(client, wav)

        pairs = await asyncio.gather(*(both(c) for c in clips))
        live = await _realtime(base_url, realtime_groups(clips, concurrency))
        long_wav = wav_bytes(long.samples)
        clean = await _timed_formats(client, long_wav)
        long_pieces = await _transcribe(client, long_wav, chunking=LONG_PIECES)
        noisy_formats = await _timed_formats(client, wav_bytes(noisy))
    return {"pairs": pairs, "live": live, "long": clean, "long_pieces": long_pieces, "noisy": noisy_formats}


def _edges(formats: dict[str, Any], words: list[tuple[float, float]]) -> dict[str, int]:
    """verbose_json segment edges and SRT/VTT cue edges inside a word."""
    segment_edges = [t for s in formats["verbose"].get("segments", []) for t in (s["start"], s["end"])]
    srt_edges = [t for c in srt.parse(formats["srt"]) for t in (c.start.total_seconds(), c.end.total_seconds())]
    # Not `start_in_seconds`: webvtt-py 0.6 gives whole seconds there.
    vtt_edges = [
        t.in_milliseconds() / 1000 for c in webvtt.from_buffer(io.StringIO(formats["vtt"])) for t in (c.start_time, c.end_time)
    ]
    return {
        "segments": len(formats["verbose"].get("segments", [])),
        "segment_edges_inside_speech": edges_inside_speech(segment_edges, words),
        "srt_cues": len(srt_edges) // 2,
        "srt_edges_inside_speech": edges_inside_speech(srt_edges, words),
        "vtt_edges_inside_speech": edges_inside_speech(vtt_edges, words),
    }


def realtime_figures(groups: list[list[Clip]], results: list[SessionResult]) -> dict[str, Any]:
    """Pure: each live session's transcripts, joined in commit order, against its clips' text."""
    return {
        "realtime_wer": round(word_error_rate([" ".join(c.text for c in g) for g in groups],
                                              [" ".join(r.transcripts) for r in results]), 4),
        "realtime_sessions": len(groups),
        "realtime_clips": sum(len(g) for g in groups),
        "realtime_turns": sum(r.utterances for r in results),
        "realtime_errors": [e for r in results for e in r.errors][:5],
    }


def figures(clips: list[Clip], long: LongRecording, measured: dict[str, Any], sessions: int) -> dict[str, Any]:
    """Pure: WER per voice, stream equality, live captions' WER, long-recording WER and edge checks."""
    from export.train.speech import HELD_OUT_VOICES

    texts = [p[0] for p in measured["pairs"]]
    streamed = [p[1] for p in measured["pairs"]]
    per_voice = {}
    for voice in (*HELD_OUT_VOICES, REFERENCE_VOICE):
        idx = [i for i, c in enumerate(clips) if c.voice == voice]
        per_voice[voice] = round(word_error_rate([clips[i].text for i in idx], [texts[i] for i in idx]), 4)
    held = [i for i, c in enumerate(clips) if c.voice != REFERENCE_VOICE]
    short_wer = word_error_rate([clips[i].text for i in held], [texts[i] for i in held])
    clean, noisy = measured["long"], measured["noisy"]
    long_wer = word_error_rate([long.text], [clean["json"]])
    mismatched = [i for i in range(len(clips)) if texts[i].strip() != streamed[i].strip()]
    return {
        "short_wer_held_out_voices": round(short_wer, 4),
        "short_wer_by_voice": per_voice,
        "short_clips": len(clips),
        "stream_equals_nonstream": len(clips) - len(mismatched),
        "stream_mismatches": [{"voice": clips[i].voice, "text": texts[i], "streamed": streamed[i]} for i in mismatched[:5]],
        **realtime_figures(realtime_groups(clips, sessions), measured["live"]),
        "long_audio_s": round(long.samples.size / SAMPLE_RATE, 1),
        "long_wer": round(long_wer, 4),
        "long_minus_short_wer_points": round(100 * (long_wer - short_wer), 2),
        "long_wer_long_pieces": round(word_error_rate([long.text], [measured["long_pieces"]]), 4),
        "long_wer_cues": round(word_error_rate([long.text], [clean["verbose"]["text"]]), 4),
        "long_reference_words": len(normalize(long.text).split()),
        "long_hypothesis_words": len(normalize(clean["json"]).split()),
        **_edges(clean, long.words),
        "noisy_long_wer": round(word_error_rate([long.text], [noisy["json"]]), 4),
        "noisy_long_wer_cues": round(word_error_rate([long.text], [noisy["verbose"]["text"]]), 4),
        **{f"noisy_{key}": value for key, value in _edges(noisy, long.words).items()},
        "examples": [{"voice": clips[i].voice, "ref": clips[i].text, "hyp": texts[i]} for i in held[:: max(1, len(held) // 6)]],
    }


def targets() -> list[report.Target]:
    return [
        report.Target("short_wer_held_out_voices", "<=", 0.05),
        report.Target("long_minus_short_wer_points", "<=", 1.0),
        report.Target("segment_edges_inside_speech", "<=", 0),
        report.Target("srt_edges_inside_speech", "<=", 0),
        report.Target("vtt_edges_inside_speech", "<=", 0),
        report.Target("noisy_segment_edges_inside_speech", "<=", 0),
        report.Target("noisy_srt_edges_inside_speech", "<=", 0),
        report.Target("noisy_vtt_edges_inside_speech", "<=", 0),
    ]


def run(settings: WerSettings) -> dict[str, Any]:
    clips = short_clips(settings)
    long = long_recording(clips, settings.long_minutes, settings.seed)
    noisy = with_background(long.samples, settings.noise_snr_db, settings.seed)
    log.info("wer: %d short clips, a %.0f s recording", len(clips), long.samples.size / SAMPLE_RATE)
    work = settings.cache_dir
    with triton(settings.repository_dir, work / "logs" / "wer-tritonserver.log", settings.ready_timeout_s) as server:
        env = {"GATEWAY_TRITON__URL": server.grpc_url, "GATEWAY_LOG_LEVEL": "warning"}
        with gateway(env, work / "logs" / "wer-gateway.log") as gw:
            measured = asyncio.run(_measure(gw.base_url, clips, long, noisy, settings.concurrency))
    section = figures(clips, long, measured, settings.concurrency)
    section["stream_equals_nonstream_all"] = section["stream_equals_nonstream"] == len(clips)
    section["normalisation"] = "canary_qwen.wer.normalize: lower case, punctuation dropped"
    section["noise_snr_db"] = settings.noise_snr_db
    section["targets"] = {t.key: report.check(t, section.get(t.key)) for t in targets()}
    return section


def show(section: dict[str, Any], settings: WerSettings) -> None:
    keys = [k for k in section if k not in ("targets", "examples", "stream_mismatches", "short_wer_by_voice", "normalisation",
                                            "realtime_errors")]
    print(report.table(section, keys))
    print(json.dumps(section["short_wer_by_voice"], indent=1))


def main(argv: list[str]) -> int:
    return report.run_section("wer", WerSettings(_cli_parse_args=argv), run, show)  # type: ignore[call-arg]
