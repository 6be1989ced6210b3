"""The plain-PyTorch FastConformer and adapter (canary_qwen/fastconformer.py) against the graphs
`export build` exported from NeMo's own modules, and its torch runtime (torch_runner.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from canary_qwen.checkpoint import load_checkpoint
from canary_qwen.fastconformer import (
    ADAPTER_FILE,
    ENCODER_FILE,
    adapter_from_checkpoint,
    encoder_from_checkpoint,
    load_torch_module,
    save_torch_artifacts,
)
from canary_qwen.manifest import ArtifactFiles
from canary_qwen.serving.torch_runner import TorchRunner, wants_torch

TOLERANCE = 1e-4  # as export/build.py's EXPORT_TOLERANCE


def _padded_batch(features: int) -> tuple[np.ndarray, np.ndarray]:
    """Three items of different lengths (one very short), zero-padded as the Triton model pads."""
    rng = np.random.default_rng(0)
    lengths = np.array([480, 173, 9], dtype=np.int32)
    mel = rng.standard_normal((3, features, 480)).astype(np.float32)
    for i, n in enumerate(lengths):
        mel[i, :, n:] = 0
    return mel, lengths


def _onnx(path: Path, *inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


def _close(ours: np.ndarray, theirs: np.ndarray, lengths: np.ndarray) -> None:
    for b, n in enumerate(lengths.tolist()):
        np.testing.assert_allclose(ours[b, :n], theirs[b, :n], atol=TOLERANCE, rtol=0)


def test_matches_nemos_exported_graphs(checkpoint_dir: Path, artifacts_dir: Path) -> None:
    checkpoint = load_checkpoint(checkpoint_dir)
    files = ArtifactFiles()
    mel, lengths = _padded_batch(checkpoint.spec.mel_features)
    onnx_encoded, onnx_len = _onnx(artifacts_dir / files.encoder, mel, lengths)
    onnx_embeds, onnx_embeds_len = _onnx(artifacts_dir / files.adapter, onnx_encoded, onnx_len)
    encoder, adapter = encoder_from_checkpoint(checkpoint), adapter_from_checkpoint(checkpoint)
    with torch.inference_mode():
        encoded, encoded_len = encoder(torch.from_numpy(mel), torch.from_numpy(lengths))
        embeds, embeds_len = adapter(encoded, encoded_len)
    assert encoded_len.dtype == embeds_len.dtype == torch.int32
    np.testing.assert_array_equal(encoded_len.numpy(), onnx_len)
    np.testing.assert_array_equal(embeds_len.numpy(), onnx_embeds_len)
    _close(encoded.numpy(), onnx_encoded, onnx_len)
    _close(embeds.numpy(), onnx_embeds, onnx_len)


def test_padding_does_not_change_an_item(checkpoint_dir: Path) -> None:
    """An item alone and the same item padded in a batch give the same frames."""
    encoder = encoder_from_checkpoint(load_checkpoint(checkpoint_dir))
    mel, lengths = _padded_batch(128)
    with torch.inference_mode():
        batch, batch_len = encoder(torch.from_numpy(mel), torch.from_numpy(lengths))
        alone, alone_len = encoder(torch.from_numpy(mel[1:2, :, :173]), torch.from_numpy(lengths[1:2]))
    assert int(batch_len[1]) == int(alone_len[0])
    n = int(alone_len[0])
    np.testing.assert_allclose(batch[1, :n].numpy(), alone[0, :n].numpy(), atol=TOLERANCE, rtol=0)


def test_torch_runner_serves_the_saved_modules(checkpoint_dir: Path, artifacts_dir: Path, tmp_path: Path) -> None:
    checkpoint = load_checkpoint(checkpoint_dir)
    encoder_path, adapter_path = save_torch_artifacts(checkpoint, tmp_path)
    assert (encoder_path.name, adapter_path.name) == (ENCODER_FILE, ADAPTER_FILE)
    params = {"runtime": "torch", "torch_file": ENCODER_FILE, "torch_device": "cpu", "torch_dtype": "float32"}
    assert wants_torch(params) and not wants_torch({})
    runner = TorchRunner.from_params(tmp_path, params)
    mel, lengths = _padded_batch(checkpoint.spec.mel_features)
    encoded, encoded_len = runner(mel, lengths)
    onnx_encoded, onnx_len = _onnx(artifacts_dir / ArtifactFiles().encoder, mel, lengths)
    assert encoded.dtype == np.float32 and encoded_len.dtype == np.int32
    np.testing.assert_array_equal(encoded_len, onnx_len)
    _close(encoded, onnx_encoded, onnx_len)
    adapter = TorchRunner(adapter_path, "cpu", "bfloat16")  # bf16 compute, float32 out
    embeds, _ = adapter(encoded, encoded_len)
    assert embeds.dtype == np.float32 and embeds.shape[-1] == checkpoint.spec.llm.hidden_size


def test_unknown_dtype_and_module_kind_are_refused(checkpoint_dir: Path, tmp_path: Path) -> None:
    encoder_path, _ = save_torch_artifacts(load_checkpoint(checkpoint_dir), tmp_path)
    with pytest.raises(ValueError, match="not a torch dtype"):
        TorchRunner(encoder_path, "cpu", "float33")
    from safetensors.torch import save_file

    bogus = tmp_path / "bogus.safetensors"
    save_file({"w": torch.zeros(1)}, str(bogus), metadata={"spec": '{"kind": "decoder"}'})
    with pytest.raises(ValueError, match="unknown module kind"):
        load_torch_module(bogus, torch.device("cpu"))
