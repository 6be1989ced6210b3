"""encoder.onnx / adapter.onnx against NeMo's modules as SALM.from_pretrained loads them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from canary_qwen.manifest import Manifest
from canary_qwen.mel import LogMel
from export.reference import Reference

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def sessions(artifacts_dir: Path) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    opts = ["CPUExecutionProvider"]
    return (
        ort.InferenceSession(str(artifacts_dir / "encoder.onnx"), providers=opts),
        ort.InferenceSession(str(artifacts_dir / "adapter.onnx"), providers=opts),
    )


def _nemo(reference: Reference, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    perception = reference.model.perception
    with torch.no_grad():
        encoded, encoded_len = perception.encoder(audio_signal=mel, length=lengths.long())
        adapted, adapted_len = perception.modality_adapter(audio_signal=encoded, length=encoded_len)
        embeds = perception.proj(adapted.transpose(1, 2))
    return encoded.transpose(1, 2).numpy(), embeds.numpy(), adapted_len.numpy()


def _onnx(sessions, mel: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    encoder, adapter = sessions
    encoded, encoded_len = encoder.run(None, {"MEL": mel, "MEL_LENGTH": lengths})
    embeds, embeds_len = adapter.run(None, {"ENCODED": encoded, "ENCODED_LENGTH": encoded_len})
    return encoded, encoded_len, embeds, embeds_len


def _check(reference: Reference, sessions, mel: torch.Tensor, lengths: list[int]) -> None:
    lens = torch.tensor(lengths, dtype=torch.int32)
    nemo_enc, nemo_emb, nemo_len = _nemo(reference, mel, lens)
    enc, enc_len, emb, emb_len = _onnx(sessions, mel.numpy(), lens.numpy())
    assert enc_len.dtype == np.int32 and emb_len.dtype == np.int32
    np.testing.assert_array_equal(enc_len, nemo_len)
    np.testing.assert_array_equal(emb_len, nemo_len)
    for b, n in enumerate(nemo_len.tolist()):
        assert np.abs(enc[b, :n] - nemo_enc[b, :n]).max() <= TOLERANCE
        assert np.abs(emb[b, :n] - nemo_emb[b, :n]).max() <= TOLERANCE


def test_tensor_names_types_and_dynamic_axes(sessions, artifacts_dir: Path) -> None:
    manifest = Manifest.load(artifacts_dir)
    encoder, adapter = sessions
    sig = lambda items: [(i.name, i.type, [d if isinstance(d, int) else None for d in i.shape]) for i in items]  # noqa: E731
    assert sig(encoder.get_inputs()) == [("MEL", "tensor(float)", [None, 128, None]), ("MEL_LENGTH", "tensor(int32)", [None])]
    assert sig(encoder.get_outputs()) == [
        ("ENCODED", "tensor(float)", [None, None, manifest.d_enc]),
        ("ENCODED_LENGTH", "tensor(int32)", [None]),
    ]
    assert sig(adapter.get_inputs()) == [
        ("ENCODED", "tensor(float)", [None, None, manifest.d_enc]),
        ("ENCODED_LENGTH", "tensor(int32)", [None]),
    ]
    assert sig(adapter.get_outputs()) == [
        ("AUDIO_EMBEDS", "tensor(float)", [None, None, manifest.d_llm]),
        ("AUDIO_EMBEDS_LENGTH", "tensor(int32)", [None]),
    ]


@pytest.mark.parametrize("frames", [9, 101, 1001, 4000])
def test_single_lengths_match_nemo(reference: Reference, sessions, frames: int) -> None:
    mel = torch.randn(1, 128, frames, generator=torch.Generator().manual_seed(frames))
    _check(reference, sessions, mel, [frames])


def test_padded_mixed_batch_matches_nemo(reference: Reference, sessions) -> None:
    lengths = [1234, 57, 777, 300]
    mel = torch.randn(len(lengths), 128, max(lengths), generator=torch.Generator().manual_seed(7))
    for b, n in enumerate(lengths):
        mel[b, :, n:] = 0
    _check(reference, sessions, mel, lengths)


def test_real_speech_features_match_nemo(reference: Reference, sessions, utterances) -> None:
    from tests.fixtures.audio.speech import read_audio

    audios = [read_audio(u.path)[0] for u in utterances[:3]]
    batch, lengths = Reference._batch_audio(audios)
    with torch.no_grad():
        mel, mel_len = reference.model.perception.preprocessor(input_signal=batch, length=lengths)
    _check(reference, sessions, mel[:, :, : int(mel_len.max())].contiguous(), mel_len.tolist())


def test_forty_seconds_is_4000_frames_and_500_embeddings(artifacts_dir: Path, sessions) -> None:
    manifest = Manifest.load(artifacts_dir)
    assert (manifest.max_audio_seconds, manifest.max_mel_frames, manifest.max_audio_embeddings) == (40.0, 4000, 500)
    assert manifest.encoder.frames_per_second == 12.5
    logmel = LogMel.from_safetensors(artifacts_dir / manifest.files.mel, manifest.mel)
    audio = np.random.default_rng(0).standard_normal(40 * 16000).astype(np.float32) * 0.1
    mel, mel_len = logmel([audio])
    assert mel.shape == (1, 128, 4000) and mel_len.tolist() == [4000]
    _, enc_len, emb, emb_len = _onnx(sessions, mel, mel_len)
    assert enc_len.tolist() == emb_len.tolist() == [500] and emb.shape == (1, 500, manifest.d_llm)
