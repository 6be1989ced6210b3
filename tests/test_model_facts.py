"""The gateway learns the model's limits from Triton (filled from manifest.json) and refuses settings above them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from canary_qwen.manifest import Manifest
from canary_qwen.mel import SAMPLE_RATE
from export.demo import DEMO_PIECE_PAUSE_S
from gateway.metrics import GatewayMetrics
from gateway.model_facts import ModelFacts, ModelFactsCheck, ModelMismatchError, check_settings
from gateway.settings import LimitSettings, Settings, TritonSettings
from gateway.triton_client import TritonClient
from tests.fixtures.gateway import run_gateway, unreachable_triton_url
from tests.fixtures.words import model_transcribes


def _settings(piece_seconds: float = 40.0) -> Settings:
    return Settings(limits=LimitSettings(piece_seconds=piece_seconds))


def test_facts_come_from_the_config_parameters() -> None:
    params = {"max_audio_seconds": "40", "sample_rate": "16000", "piece_pause_s": ""}
    assert ModelFacts.from_parameters("canary_qwen", params) == ModelFacts("canary_qwen", 40.0, 16000, None)
    demo = ModelFacts.from_parameters("canary_qwen", params | {"piece_pause_s": "0.3"})
    assert demo.piece_pause_s == 0.3
    for missing in ("max_audio_seconds", "piece_pause_s"):
        with pytest.raises(ModelMismatchError, match=missing):
            ModelFacts.from_parameters("canary_qwen", {k: v for k, v in params.items() if k != missing})
    for bad in ("0", "-1", "nan"):
        with pytest.raises(ModelMismatchError, match="piece_pause_s"):
            ModelFacts.from_parameters("canary_qwen", params | {"piece_pause_s": bad})


def test_pieces_longer_than_the_model_takes_are_refused() -> None:
    facts = ModelFacts("canary_qwen", 30.0, SAMPLE_RATE)
    check_settings(facts, _settings(30.0))
    with pytest.raises(ModelMismatchError, match=r"GATEWAY_LIMITS__PIECE_SECONDS=40 is above the 30 s"):
        check_settings(facts, _settings(40.0))
    with pytest.raises(ModelMismatchError, match="8000 Hz"):
        check_settings(ModelFacts("canary_qwen", 40.0, 8000), _settings())


def test_cues_longer_than_the_model_takes_are_refused() -> None:
    """A cue's audio is the cue and up to `model_pad_s` of pause on each side."""
    facts = ModelFacts("canary_qwen", 8.0, SAMPLE_RATE)
    check_settings(facts, Settings(limits=LimitSettings(piece_seconds=8.0)))  # 7 s cues + 2 x 0.3 s
    with pytest.raises(ModelMismatchError, match=r"GATEWAY_CAPTIONS__MAX_CUE_S=7.5 .* sends 8.1 s a cue"):
        check_settings(facts, Settings(limits=LimitSettings(piece_seconds=8.0), captions={"max_cue_s": 7.5}))  # type: ignore[arg-type]


async def test_readiness_stays_false_with_the_reason_when_learned_late() -> None:
    """Triton down at start-up: the first ready answer triggers the check."""
    fetched: list[str] = []

    async def fetch(model: str) -> dict[str, str]:
        fetched.append(model)
        return {"max_audio_seconds": "20", "sample_rate": str(SAMPLE_RATE), "piece_pause_s": ""}

    async def ready(models: Sequence[str]) -> tuple[bool, str]:
        return True, "ready"

    guarded = ModelFactsCheck(fetch, _settings(40.0)).guard(ready)
    for _ in range(2):
        ok, reason = await guarded(["canary_qwen"])
        assert not ok and "PIECE_SECONDS=40 is above the 20 s" in reason
    assert fetched == ["canary_qwen"]  # learned once


async def test_triton_serves_the_manifest_limits(triton_server, artifacts_dir: Path) -> None:  # type: ignore[no-untyped-def]
    manifest = Manifest.load(artifacts_dir)
    client = TritonClient(TritonSettings(url=triton_server.grpc_url), GatewayMetrics())
    try:
        params = await client.model_parameters("canary_qwen")
        stream_params = await client.model_parameters("canary_qwen_stream")
    finally:
        await client.close()
    facts = ModelFacts.from_parameters("canary_qwen", params)
    assert facts.max_audio_seconds == manifest.max_audio_seconds
    assert facts.sample_rate == manifest.sample_rate == SAMPLE_RATE
    assert facts.piece_pause_s == manifest.piece_pause_s
    # `export all` asks for the demo model's cutting, and only for it (the random model's is the real one's).
    assert manifest.piece_pause_s == (DEMO_PIECE_PAUSE_S if model_transcribes() else None)
    assert ModelFacts.from_parameters("canary_qwen_stream", stream_params) == ModelFacts(
        "canary_qwen_stream", facts.max_audio_seconds, facts.sample_rate, facts.piece_pause_s
    )


def test_gateway_does_not_start_with_longer_pieces_than_the_model_takes(
    triton_server, artifacts_dir: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    too_long = Manifest.load(artifacts_dir).max_audio_seconds + 1
    env = {"GATEWAY_TRITON__URL": triton_server.grpc_url, "GATEWAY_LIMITS__PIECE_SECONDS": f"{too_long:g}"}
    with pytest.raises(RuntimeError, match=f"GATEWAY_LIMITS__PIECE_SECONDS={too_long:g} is above"):
        with run_gateway(env, tmp_path / "too-long.log", start_timeout=180):
            pass


def test_gateway_starts_while_triton_is_away(tmp_path: Path) -> None:
    """Unreachable at start-up is not an error: readiness checks the limits later."""
    env = {"GATEWAY_TRITON__URL": unreachable_triton_url(), "GATEWAY_LIMITS__PIECE_SECONDS": "1000"}
    with run_gateway(env, tmp_path / "away.log", start_timeout=180) as gateway:  # a loaded CI box starts slowly
        assert gateway.process.poll() is None


def test_export_records_the_longest_piece_it_was_given(checkpoint_dir: Path, artifacts_dir: Path) -> None:
    """`export build --max-audio-seconds`: the manifest's limit and the lengths derived from it follow."""
    from canary_qwen.checkpoint import load_checkpoint
    from export.build import MAX_AUDIO_SECONDS, make_manifest

    built = Manifest.load(artifacts_dir)
    assert built.max_audio_seconds == MAX_AUDIO_SECONDS
    half = make_manifest(
        load_checkpoint(checkpoint_dir), built.asr_prompt_ids, built.model_id, MAX_AUDIO_SECONDS / 2, built.piece_pause_s
    )
    assert half.max_audio_seconds == MAX_AUDIO_SECONDS / 2
    assert half.max_mel_frames == built.max_mel_frames // 2
    assert half.max_audio_embeddings < built.max_audio_embeddings
    derived = {"max_audio_seconds", "max_mel_frames", "max_audio_embeddings"}
    assert half.model_dump(exclude=derived) == built.model_dump(exclude=derived)
    paused = make_manifest(load_checkpoint(checkpoint_dir), built.asr_prompt_ids, built.model_id, piece_pause_s=0.3)
    assert paused.piece_pause_s == 0.3
    assert paused.model_dump(exclude={"piece_pause_s"}) == built.model_dump(exclude={"piece_pause_s"})


@pytest.mark.parametrize(("piece_pause_s", "pieces"), [("", 1), (f"{DEMO_PIECE_PAUSE_S:g}", 2)])
async def test_transcription_cuts_as_the_model_asks(utterances, piece_pause_s: str, pieces: int) -> None:  # type: ignore[no-untyped-def]
    """Two sentences 0.5 s apart, uploaded as a WAV: one piece for a model without
    `piece_pause_s`, one piece per sentence for the demo's (learned from Triton's parameters)."""
    import io

    import numpy as np
    import soundfile

    from gateway.transcription import TranscriptionService
    from tests.fixtures.audio.speech import spoken_speech

    async def fetch(model: str) -> dict[str, str]:
        return {"max_audio_seconds": "40", "sample_rate": str(SAMPLE_RATE), "piece_pause_s": piece_pause_s}

    parts = []
    for utterance in utterances[:2]:
        parts += [spoken_speech(utterance.path), np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]
    wav = io.BytesIO()
    soundfile.write(wav, np.concatenate(parts), SAMPLE_RATE, format="WAV")
    settings = _settings()
    triton = TritonClient(TritonSettings(url=unreachable_triton_url()), GatewayMetrics())  # never called
    try:
        service = TranscriptionService(settings, triton, GatewayMetrics(), ModelFactsCheck(fetch, settings))
        prepared = await service.prepare(wav.getvalue(), param="file", route="/v1/audio/transcriptions")
    finally:
        await triton.close()
    assert len(prepared.pieces) == pieces
