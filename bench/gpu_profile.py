"""A short in-process profile of each step, outside Triton: where a request's time goes.

preprocess: log-mel on the CPU (canary_qwen/mel.py), ms per audio second over the corpus.
encoder, adapter: the plain-PyTorch modules on `device`, ms per batch of `audio_s` clips.
prefill: one LLM forward over a batch of ASR prompts (15 tokens + that audio's embeddings).
decode: ms per greedy step of that batch, with its KV cache (transformers' DynamicCache).
Each figure is the median of a few timed repeats after one warm-up, synchronized on CUDA.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.corpus import Clip
from canary_qwen.fastconformer import ADAPTER_FILE, ENCODER_FILE, load_torch_module
from canary_qwen.manifest import Manifest
from canary_qwen.mel import LogMel

REPEATS = 3
DECODE_STEPS = 16


def _timed_ms(run: Callable[[], object], device: torch.device, repeats: int = REPEATS) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    run()  # warm-up: kernels picked, caches allocated
    sync()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        sync()
        samples.append((time.perf_counter() - started) * 1000.0)
    return round(statistics.median(samples), 3)


def preprocess_ms_per_audio_s(artifacts: Path, manifest: Manifest, clips: Sequence[Clip]) -> float:
    logmel = LogMel.from_safetensors(artifacts / manifest.files.mel, manifest.mel)
    audio_s = sum(clip.duration_s for clip in clips)
    started = time.perf_counter()
    for clip in clips:
        logmel([clip.samples])
    return round((time.perf_counter() - started) * 1000.0 / audio_s, 3)


def profile(
    artifacts: Path,
    clips: Sequence[Clip],
    *,
    device: str,
    torch_dtype: str,
    llm_dtype: str,
    batch_sizes: Sequence[int],
    audio_s: float,
) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM
    from transformers.cache_utils import DynamicCache

    manifest = Manifest.load(artifacts)
    dev = torch.device(device)
    dtype, lm_dtype = getattr(torch, torch_dtype), getattr(torch, llm_dtype)
    encoder = load_torch_module(artifacts / ENCODER_FILE, dev, dtype)
    adapter = load_torch_module(artifacts / ADAPTER_FILE, dev, dtype)
    llm = AutoModelForCausalLM.from_pretrained(str(artifacts / manifest.files.llm_asr), dtype=lm_dtype).to(dev).eval()
    # transformers 5.x renamed `past_key_values` to `cache` (as canary_qwen/generation.py handles).
    cache_kw = "cache" if "cache" in inspect.signature(llm.forward).parameters else "past_key_values"
    mel_frames = int(round(audio_s * manifest.mel_frames_per_second))
    audio_embeds = manifest.encoder.frames_per_second * audio_s
    prompt_len = len(manifest.asr_prompt_ids) - 1 + int(audio_embeds)
    gen = torch.Generator(device="cpu").manual_seed(0)
    out: dict[str, Any] = {
        "audio_s": audio_s,
        "prompt_tokens": prompt_len,
        "preprocess_ms_per_audio_s": preprocess_ms_per_audio_s(artifacts, manifest, clips),
        "batches": {},
    }
    with torch.inference_mode():
        for batch in batch_sizes:
            mel = torch.randn(batch, manifest.mel.features, mel_frames, generator=gen).to(dev, dtype)
            lengths = torch.full((batch,), mel_frames, dtype=torch.int32, device=dev)
            encoded, encoded_len = encoder(mel, lengths)
            embeds = (torch.randn(batch, prompt_len, manifest.d_llm, generator=gen) * 0.02).to(dev, lm_dtype)
            mask = torch.ones(batch, prompt_len, dtype=torch.long, device=dev)

            def prefill() -> Any:
                return llm(inputs_embeds=embeds, attention_mask=mask, use_cache=True, logits_to_keep=1,
                           **{cache_kw: DynamicCache()})  # fmt: skip

            state: dict[str, Any] = {}

            def decode() -> None:
                first = prefill()
                cache, step_mask = getattr(first, cache_kw), mask
                token = first.logits[:, -1].argmax(-1, keepdim=True)
                started = time.perf_counter()
                for step in range(DECODE_STEPS):
                    step_mask = torch.cat([step_mask, step_mask.new_ones(batch, 1)], dim=1)
                    positions = torch.full((batch, 1), prompt_len + step, device=dev)
                    result = llm(input_ids=token, attention_mask=step_mask, position_ids=positions,
                                 use_cache=True, logits_to_keep=1, **{cache_kw: cache})  # fmt: skip
                    cache, token = getattr(result, cache_kw), result.logits[:, -1].argmax(-1, keepdim=True)
                    token.tolist()  # the engine reads each step's tokens back (a sync per step)
                state["decode_ms"] = (time.perf_counter() - started) * 1000.0 / DECODE_STEPS

            figures = {
                "encoder_ms": _timed_ms(lambda: encoder(mel, lengths), dev),
                "adapter_ms": _timed_ms(lambda: adapter(encoded, encoded_len), dev),
                "prefill_ms": _timed_ms(prefill, dev),
            }
            decode_samples = []
            for _ in range(REPEATS):
                decode()
                decode_samples.append(state["decode_ms"])
            figures["decode_ms_per_step"] = round(statistics.median(decode_samples), 3)
            out["batches"][str(batch)] = figures
    if dev.type == "cuda":
        out["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
    del llm, encoder, adapter
    return out
