"""canary_qwen.mel against NeMo's own AudioToMelSpectrogramPreprocessor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from canary_qwen.mel import LogMel, MelSettings

SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def nemo_preprocessor() -> torch.nn.Module:
    from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

    # Canary-Qwen's preprocessor config (notes/model.md), in eval mode: no dither.
    pre = AudioToMelSpectrogramPreprocessor(
        sample_rate=SAMPLE_RATE,
        window_size=0.025,
        window_stride=0.01,
        window="hann",
        normalize="per_feature",
        n_fft=512,
        features=128,
        log=True,
        log_zero_guard_type="add",
        log_zero_guard_value=2**-24,
        dither=0.0,
        pad_to=0,
        frame_splicing=1,
        preemph=0.97,
        mag_power=2.0,
    )
    return pre.eval()


@pytest.fixture(scope="module")
def logmel(nemo_preprocessor: torch.nn.Module) -> LogMel:
    featurizer = nemo_preprocessor.featurizer
    # The checkpoint stores bf16-truncated buffers; using NeMo's buffers
    # round-tripped through bf16 exercises the same path.
    fb = featurizer.fb.to(torch.bfloat16).float().numpy()
    window = featurizer.window.to(torch.bfloat16).float().numpy()
    featurizer.fb.copy_(torch.from_numpy(fb))
    featurizer.window.copy_(torch.from_numpy(window))
    return LogMel(fb, window, MelSettings())


def _speechlike(samples: int, seed: int) -> np.ndarray:
    """Noise and tones under a syllable-rate envelope, with a stretch of digital silence."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.7 * t + seed)
    tone = 0.2 * np.sin(2 * np.pi * (180 + 40 * seed) * t)
    audio = envelope * (0.05 * rng.standard_normal(samples) + tone)
    audio[samples // 3 : samples // 3 + samples // 10] = 0.0
    return audio.astype(np.float32)


def _nemo(pre: torch.nn.Module, waveforms: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    lengths = torch.tensor([w.size for w in waveforms], dtype=torch.int64)
    batch = torch.zeros(len(waveforms), int(lengths.max()))
    for i, w in enumerate(waveforms):
        batch[i, : w.size] = torch.from_numpy(w)
    with torch.no_grad():
        mel, mel_len = pre(input_signal=batch, length=lengths)
    return mel.numpy(), mel_len.numpy()


@pytest.mark.parametrize("samples", [16000, 16159, 40037, 123456])
def test_single_utterance_matches_nemo(nemo_preprocessor: torch.nn.Module, logmel: LogMel, samples: int) -> None:
    audio = _speechlike(samples, seed=samples % 7)
    ref, ref_len = _nemo(nemo_preprocessor, [audio])
    mel, lengths = logmel([audio])
    assert lengths.dtype == np.int32 and lengths.tolist() == ref_len.tolist() == [samples // 160]
    assert mel.shape == (1, 128, samples // 160)
    np.testing.assert_allclose(mel, ref[:, :, : mel.shape[2]], rtol=0, atol=1e-4)
    # NeMo's tensor has one more frame than the longest length, always zero.
    assert not ref[:, :, mel.shape[2] :].any()


def test_padded_mixed_batch_matches_nemo(nemo_preprocessor: torch.nn.Module, logmel: LogMel) -> None:
    waveforms = [_speechlike(n, seed=i) for i, n in enumerate([48000, 3217, 16000, 80123, 320])]
    ref, ref_len = _nemo(nemo_preprocessor, waveforms)
    mel, lengths = logmel(waveforms)
    assert lengths.tolist() == ref_len.tolist() == [300, 20, 100, 500, 2]
    assert mel.dtype == np.float32 and mel.shape == (5, 128, 500)
    np.testing.assert_allclose(mel, ref[:, :, :500], rtol=0, atol=1e-4)
    # Padding past each length is exactly zero.
    for row, n in zip(mel, lengths):
        assert not row[:, n:].any()
        assert row[:, :n].any()


def test_batch_result_equals_one_at_a_time(logmel: LogMel) -> None:
    waveforms = [_speechlike(n, seed=i) for i, n in enumerate([24000, 7000, 55555])]
    mel, lengths = logmel(waveforms)
    for i, w in enumerate(waveforms):
        alone, alone_len = logmel([w])
        assert alone_len[0] == lengths[i]
        # Not bitwise: BLAS may round differently for a different number of rows.
        np.testing.assert_allclose(mel[i, :, : lengths[i]], alone[0], rtol=0, atol=1e-6)


def test_forty_seconds_is_4000_frames(logmel: LogMel) -> None:
    mel, lengths = logmel([np.zeros(40 * SAMPLE_RATE, dtype=np.float32)])
    assert lengths.tolist() == [4000]
    assert mel.shape == (1, 128, 4000)
    assert MelSettings().frames(40 * SAMPLE_RATE) == 4000


def test_too_short_audio_gives_no_frames(logmel: LogMel) -> None:
    mel, lengths = logmel([np.ones(159, dtype=np.float32), np.ones(800, dtype=np.float32)])
    assert lengths.tolist() == [0, 5]
    assert mel.shape == (2, 128, 5)
    assert not mel[0].any()


def test_rejects_filterbank_of_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"fb has shape \(64, 257\)"):
        LogMel(np.zeros((64, 257), np.float32), np.hanning(400))


def test_loads_buffers_from_safetensors(tmp_path, logmel: LogMel) -> None:
    from safetensors.numpy import save_file

    path = tmp_path / "mel.safetensors"
    save_file({"fb": logmel.fb[None].copy(), "window": logmel.window.copy()}, str(path))
    loaded = LogMel.from_safetensors(path)
    audio = _speechlike(20000, seed=3)
    np.testing.assert_array_equal(loaded([audio])[0], logmel([audio])[0])
