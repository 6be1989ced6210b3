"""Training and held-out speech: espeak-ng voices, rates and pitches, then augmentation.

Augmentation mirrors what uploads go through before the model sees them: another sample rate
and back, a lossy codec round trip (mp3, opus), a little reverberation, noise and gain. The
held-out voices (two espeak accents and two voice variants) are never used in training.
"""

from __future__ import annotations

import io
import math
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

import av
import numpy as np
from scipy.signal import fftconvolve, resample_poly

import soundfile

from canary_qwen.mel import MelSettings
from export.train.espeak_lib import Synthesizer

SAMPLE_RATE = MelSettings().sample_rate

ESPEAK_RATE = 22050
TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029")
TRAIN_VARIANTS = (
    "", "m1", "m2", "m3", "m4", "m5", "m6", "m8", "f1", "f2", "f3", "f5", "adam", "Alex", "Alicia",
    "Andrea", "Annie", "aunty", "belinda", "benjamin", "boris", "caleb", "david", "ed", "edward",
    "Gene", "gustave", "Henrique", "Hugo", "iven", "Jacky", "john", "Lee", "linda", "marcelo",
    "Mario", "max", "Michael", "Mike", "Mr", "norbert", "paul", "pedro", "quincy", "rob",
    "robert", "sandro", "shelby", "steph", "travis", "victor", "zac", "klatt", "klatt2",
)  # fmt: skip
HELD_OUT_ACCENTS = ("en-us-nyc", "en-gb-x-gbcwmd")
HELD_OUT_VARIANTS = ("f4", "Andy")
# The voices the held-out evaluation speaks: two unseen accents, two unseen variants.
HELD_OUT_VOICES = ("en-us-nyc", "en-gb-x-gbcwmd", "en-us+f4", "en-gb+Andy")


@dataclass(frozen=True)
class Voice:
    name: str  # espeak -v argument, e.g. "en-gb+m3"
    words_per_minute: int = 160
    pitch: int = 50


def speak(text: str, voice: Voice) -> np.ndarray:
    """espeak-ng's speech for `text` as float32 at 16 kHz (espeak writes 22.05 kHz)."""
    with tempfile.NamedTemporaryFile(suffix=".wav") as out:
        subprocess.run(
            ["espeak-ng", "-v", voice.name, "-s", str(voice.words_per_minute), "-p", str(voice.pitch),
             "-w", out.name, "--", text],
            check=True, capture_output=True,
        )  # fmt: skip
        pcm, rate = soundfile.read(out.name, dtype="float32")
    if rate != ESPEAK_RATE:
        raise RuntimeError(f"espeak-ng wrote {rate} Hz, expected {ESPEAK_RATE}")
    return resample_poly(pcm, SAMPLE_RATE // 50, ESPEAK_RATE // 50).astype(np.float32)


@dataclass(frozen=True)
class TimedWord:
    """One spoken word: its characters in the text and its time in the audio (seconds)."""

    start_char: int
    end_char: int
    start_s: float
    end_s: float

    def shifted(self, chars: int, seconds: float) -> TimedWord:
        return TimedWord(self.start_char + chars, self.end_char + chars, self.start_s + seconds, self.end_s + seconds)


_synthesizer: Synthesizer | None = None


def _text_end(text: str, start: int, stop: int) -> int:
    """Where the text up to `stop` ends, trailing spaces and punctuation left out."""
    while stop > start + 1 and not text[stop - 1].isalnum():
        stop -= 1
    return stop


def _library() -> Synthesizer:
    global _synthesizer
    if _synthesizer is None:  # one per process: the library is process-global
        _synthesizer = Synthesizer()
    return _synthesizer


def phonemes(text: str, voice: Voice) -> list[str]:
    """The phonemes `voice` says for `text` (espeak's names, in its accent)."""
    return _library().phonemes(text, voice.name)


def phoneme_inventory(texts: Sequence[str]) -> list[str]:
    """Every phoneme the training accents say in `texts`, sorted: the classes of the phoneme
    CTC head, the same on every run over the same corpus."""
    found = {name for accent in TRAIN_ACCENTS for text in texts for name in phonemes(text, Voice(accent))}
    return sorted(found)


def speak_timed(text: str, voice: Voice) -> tuple[np.ndarray, list[TimedWord]]:
    """The same engine's speech through libespeak-ng (float32 at 16 kHz) and each word's span.

    A word lasts from its start to the next word's start (the last one to the end of the
    speech), so pauses after commas fall inside a word; frame labels gate them out by energy.
    Its text runs on to the next word's: espeak reports "won't" as "won", and speaks an
    unstressed word with its neighbour ("on the" is one event).
    """
    synthesizer = _library()
    pcm, words = synthesizer.speak(text, voice.name, voice.words_per_minute, voice.pitch)
    rate = synthesizer.sample_rate
    loud = np.flatnonzero(np.abs(pcm) > 1e-3)
    end = int(loud[-1]) + 1 if loud.size else pcm.size
    starts = [w.start_sample for w in words] + [end]
    chars = [w.start_char for w in words] + [len(text)]
    timed = [
        TimedWord(chars[i], _text_end(text, chars[i], chars[i + 1]), starts[i] / rate, max(starts[i], starts[i + 1]) / rate)
        for i in range(len(words))
    ]
    g = math.gcd(SAMPLE_RATE, rate)
    return resample_poly(pcm, SAMPLE_RATE // g, rate // g).astype(np.float32), timed


TRAIN_RATES_WPM = (120, 221)  # espeak's speaking rates in training, [low, high)


def random_voice(rng: np.random.Generator) -> Voice:
    accent = TRAIN_ACCENTS[rng.integers(len(TRAIN_ACCENTS))]
    variant = TRAIN_VARIANTS[rng.integers(len(TRAIN_VARIANTS))]
    name = f"{accent}+{variant}" if variant else accent
    return Voice(name, words_per_minute=int(rng.integers(*TRAIN_RATES_WPM)), pitch=int(rng.integers(15, 86)))


def silence(seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    return (rng.standard_normal(n) * 10 ** rng.uniform(-5, -3.5)).astype(np.float32)


def _codec_round_trip(audio: np.ndarray, codec: str, bit_rate: int) -> np.ndarray:
    """Encode with PyAV (mp3 or opus in ogg) and decode back to 16 kHz mono float32."""
    container_format, rate = {"libmp3lame": ("mp3", SAMPLE_RATE), "libopus": ("ogg", 48000)}[codec]
    buf = io.BytesIO()
    frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="fltp", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    with av.open(buf, "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        stream.bit_rate = bit_rate
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=rate)
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            piece.pts = None
            out.mux(stream.encode(piece))
        out.mux(stream.encode(None))
    buf.seek(0)
    decoded = []
    with av.open(buf, "r") as src:
        back = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for packet_frame in src.decode(audio=0):
            decoded += [f.to_ndarray().reshape(-1) for f in back.resample(packet_frame)]
        decoded += [f.to_ndarray().reshape(-1) for f in back.resample(None)]
    return np.concatenate(decoded).astype(np.float32) if decoded else audio


def _reverb(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.08, 0.4)
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[0] = 0.0
    # "A little": the direct path 3-15 dB above the tail's energy (the first recipe left the
    # tail 0-22 dB above the direct path, a far harsher room than any upload).
    drr_db = rng.uniform(3, 15)
    rir = tail / np.sqrt(np.sum(tail**2) * 10 ** (drr_db / 10))
    rir[0] = 1.0
    wet = fftconvolve(audio, rir)[: audio.size]
    return (wet / (np.max(np.abs(wet)) + 1e-9) * np.max(np.abs(audio))).astype(np.float32)


def _noise(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(audio.size)
    if rng.random() < 0.5:  # pink-ish: integrate white noise a little
        white = np.cumsum(white) * 0.02 + white * 0.3
        white -= np.convolve(white, np.ones(400) / 400, mode="same")
    power = float(np.mean(audio**2)) + 1e-12
    snr_db = rng.uniform(5, 40)
    scale = np.sqrt(power / (10 ** (snr_db / 10)) / (np.mean(white**2) + 1e-12))
    return (audio + white * scale).astype(np.float32)


def augment(audio: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    """A random chain of upload-like changes; returns the audio and what was applied."""
    applied: list[str] = []
    if rng.random() < 0.25:
        rate = int(rng.choice([8000, 11025, 22050, 44100, 48000]))
        audio = resample_poly(resample_poly(audio, rate // 25, SAMPLE_RATE // 25), SAMPLE_RATE // 25, rate // 25)
        audio = audio.astype(np.float32)
        applied.append(f"rate{rate}")
    if rng.random() < 0.2:
        audio = _reverb(audio, rng)
        applied.append("reverb")
    if rng.random() < 0.5:
        audio = _noise(audio, rng)
        applied.append("noise")
    if rng.random() < 0.3:
        codec = "libmp3lame" if rng.random() < 0.5 else "libopus"
        bit_rate = int(rng.choice([24000, 32000, 48000, 64000]))
        audio = _codec_round_trip(np.clip(audio, -1, 1), codec, bit_rate)
        applied.append(f"{codec}{bit_rate // 1000}k")
    gain_db = rng.uniform(-24, 8)
    audio = np.clip(audio * 10 ** (gain_db / 20), -1, 1).astype(np.float32)
    return audio, applied
