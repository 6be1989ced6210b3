"""preprocessor: float32 16 kHz PCM -> NeMo log-mel, one batched call per dynamic batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from canary_qwen.manifest import Manifest
from canary_qwen.mel import LogMel
from canary_qwen.serving.audio_batch import AudioLimits, request_waveforms
from canary_qwen.serving.ragged import pad_stack
from canary_qwen.serving.triton_io import error_response, model_parameters, ok_response, required_array


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        params = model_parameters(args)
        version_dir = Path(args["model_repository"]) / args["model_version"]
        manifest = Manifest.load(version_dir / "manifest.json")
        self._mel = LogMel.from_safetensors(version_dir / "mel.safetensors", manifest.mel)
        hop = self._mel.settings.hop_length
        self._limits = AudioLimits(
            sample_rate=int(params["sample_rate"]),
            max_seconds=float(params["max_audio_seconds"]),
            min_samples=hop,
        )
        self._bucket = int(params.get("mel_bucket_frames", "0"))

    def execute(self, requests: list[Any]) -> list[Any]:
        parsed: list[list[np.ndarray] | Exception] = []
        for request in requests:
            try:
                parsed.append(request_waveforms(required_array(request, "AUDIO"), self._limits))
            except Exception as error:
                parsed.append(error)
        waveforms = [w for item in parsed if not isinstance(item, Exception) for w in item]
        if not waveforms:
            return [error_response(item) for item in parsed]  # type: ignore[arg-type]
        mel, lengths = self._mel(waveforms)  # one batched STFT over every valid waveform
        responses, start = [], 0
        for item in parsed:
            if isinstance(item, Exception):
                responses.append(error_response(item))
                continue
            count = len(item)
            rows = [mel[i, :, : lengths[i]] for i in range(start, start + count)]
            responses.append(
                ok_response(
                    {
                        "MEL": pad_stack(rows, axis=1, multiple=self._bucket),
                        "MEL_LENGTH": lengths[start : start + count].reshape(count, 1),
                    }
                )
            )
            start += count
        return responses
