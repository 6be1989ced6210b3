"""CPU cost of the preprocessing stages: decode + resample (gateway) and log-mel (preprocessor).

Measured in this process with `time.process_time()` (CPU seconds of every thread) on one
thread (BLAS limited to one), so the figure is audio seconds per CPU second of one core,
whatever the machine's core count. The corpus is encoded once per format from espeak-ng's
own 22.05 kHz wav, so every decoder really resamples to 16 kHz:

- wav: espeak's file itself (16-bit PCM, 22.05 kHz), the headline figure;
- flac: the same at 22.05 kHz (sox); mp3: 64 kb/s at 22.05 kHz (sox, libmp3lame);
- opus: 24 kb/s in Ogg (PyAV, libopus at 16 kHz; FFmpeg decodes Opus at 48 kHz);
- wav-av: the wav through the PyAV path (`decode_audio_av`), the decoder PCM used before.

Each round runs every format over the whole corpus; the report's intervals resample rounds.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from threadpoolctl import threadpool_limits

from canary_qwen.mel import LogMel
from gateway.audio import decode_audio
from gateway.audio.decode import DecodedAudio, decode_audio_av

from bench.corpus import SAMPLE_RATE, Clip
from bench.stats import rate_interval

FORMATS: tuple[str, ...] = ("wav", "flac", "mp3", "opus", "wav-av")
HEADLINE_FORMAT = "wav"
_SOX_ARGS = {"flac": ("-b", "16"), "mp3": ("-C", "64")}
_OPUS_BITRATE = 24000

Decoder = Callable[..., DecodedAudio]


@dataclass
class FormatRounds:
    """Per round: audio seconds, decode + resample CPU seconds, log-mel CPU seconds."""

    audio_s: list[float] = field(default_factory=list)
    decode_cpu_s: list[float] = field(default_factory=list)
    mel_cpu_s: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, dict[str, Any]]:
        total = [d + m for d, m in zip(self.decode_cpu_s, self.mel_cpu_s)]
        return {
            "preprocess": rate_interval(self.audio_s, total).as_dict(1),
            "decode_resample": rate_interval(self.audio_s, self.decode_cpu_s).as_dict(1),
            "log_mel": rate_interval(self.audio_s, self.mel_cpu_s).as_dict(1),
        }


def encode_corpus(clips: Sequence[Clip], out_dir: Path) -> dict[str, list[bytes]]:
    """The corpus in every measured format, cached next to the clips."""
    out_dir.mkdir(parents=True, exist_ok=True)
    encoded: dict[str, list[bytes]] = {fmt: [] for fmt in FORMATS}
    for clip in clips:
        source = clip.source_path
        encoded["wav"].append(source.read_bytes())
        encoded["wav-av"].append(encoded["wav"][-1])
        for fmt, args in _SOX_ARGS.items():
            target = out_dir / f"{source.stem}.{fmt}"
            if not target.exists():
                partial = out_dir / f"partial-{source.stem}.{fmt}"
                subprocess.run(["sox", str(source), *args, str(partial)], check=True, capture_output=True)
                partial.replace(target)
            encoded[fmt].append(target.read_bytes())
        target = out_dir / f"{source.stem}.opus"
        if not target.exists():
            partial = out_dir / f"partial-{source.stem}.opus"
            _encode_opus(clip.samples, partial)
            partial.replace(target)
        encoded["opus"].append(target.read_bytes())
    return encoded


def _encode_opus(samples: np.ndarray, out: Path) -> None:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1).astype(np.float32), format="flt", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    with av.open(str(out), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = _OPUS_BITRATE
        resampler = av.AudioResampler(format=stream.format, layout="mono", rate=SAMPLE_RATE)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            chunk.pts = None
            container.mux(stream.encode(chunk))
        container.mux(stream.encode(None))


def measure(encoded: dict[str, list[bytes]], mel_path: Path, rounds: int) -> dict[str, FormatRounds]:
    """`rounds` passes over every format's corpus, formats interleaved within each round."""
    log_mel = LogMel.from_safetensors(mel_path)
    decoders: dict[str, Decoder] = {fmt: decode_audio for fmt in encoded}
    decoders["wav-av"] = decode_audio_av
    results = {fmt: FormatRounds() for fmt in encoded}
    with threadpool_limits(limits=1):
        for fmt, files in encoded.items():  # first-call costs (imports, allocations) are not per-audio work
            log_mel([decoders[fmt](files[0], max_seconds=3600.0, target_rate=SAMPLE_RATE).samples])
        for round_index in range(rounds):
            order = list(encoded) if round_index % 2 == 0 else list(encoded)[::-1]
            for fmt in order:
                _one_pass(encoded[fmt], decoders[fmt], log_mel, results[fmt])
    return results


def _one_pass(files: Sequence[bytes], decode: Decoder, log_mel: LogMel, into: FormatRounds) -> None:
    audio_s = decode_cpu = mel_cpu = 0.0
    for data in files:
        started = time.process_time()
        decoded = decode(data, max_seconds=3600.0, target_rate=SAMPLE_RATE)
        decoded_at = time.process_time()
        log_mel([decoded.samples])
        mel_cpu += time.process_time() - decoded_at
        decode_cpu += decoded_at - started
        audio_s += decoded.duration_s
    into.audio_s.append(audio_s)
    into.decode_cpu_s.append(decode_cpu)
    into.mel_cpu_s.append(mel_cpu)


def main(argv: list[str]) -> int:
    """`python -m bench preprocess`: only the preprocessing rounds, in this process (seconds)."""
    from bench import affinity
    from bench.corpus import build_corpus
    from bench.settings import BenchSettings

    settings = BenchSettings(_cli_parse_args=argv)  # type: ignore[call-arg]
    affinity.pin_self(affinity.plan(affinity.usable_cpus()).client)
    clips = build_corpus(settings.cache_dir / "audio")
    encoded = encode_corpus(clips, settings.cache_dir / "audio" / "formats")
    results = measure(encoded, settings.artifacts_dir / "mel.safetensors", settings.preprocess_rounds)
    print("| format | decode + resample + log-mel | decode + resample | log-mel |\n|---|---|---|---|")
    for fmt, rounds in results.items():
        cells = [
            f"{f['value']:,.0f}" + ("" if f["ci95"] is None else f" ({f['ci95'][0]:,.0f} - {f['ci95'][1]:,.0f})")
            for f in rounds.figures().values()
        ]
        print(f"| {fmt} | {' | '.join(cells)} |")
    print(f"\naudio seconds per CPU second, one thread; 95 % intervals over {settings.preprocess_rounds} rounds")
    return 0
