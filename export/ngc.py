"""The one NVIDIA container release the gpu tier's build steps and serving target.

25.10 ships TensorRT-LLM 1.0.0 with TensorRT 10.11 and CUDA 12.9.1 (Triton's
compatibility matrix). It is the newest release that has everything the gpu
tier needs at once:
- TensorRT-LLM 1.0 is the first release that builds Qwen3 (dense) as a
  TensorRT engine (`QWenForCausalLM` + `trtllm-build`); earlier ones ran Qwen3
  on the PyTorch backend only;
- its Triton `tensorrtllm` backend still takes `prompt_embedding_table` /
  `prompt_vocab_size` (the multimodal prompt-table path, deprecated and due to
  end with TensorRT-LLM 1.2; upstream main has dropped the TensorRT-engine path);
- CUDA 12.9 still runs on the data-center R535/R545/R570 drivers, which the
  CUDA 13 based 25.11+ images no longer do.
Builds and serving must use the same image: TensorRT plans and TensorRT-LLM
engines only load in the TensorRT / TensorRT-LLM version that built them.
"""

TRITON_RELEASE = "25.10"
NGC_IMAGE = f"nvcr.io/nvidia/tritonserver:{TRITON_RELEASE}-trtllm-python-py3"
TENSORRT_LLM_VERSION = "1.0.0"
TENSORRT_VERSION = "10.11"
# Backends in that image (tensorrtllm_backend v1.0.0 build.sh builds it with `--backend=ensemble
# --backend=tensorrtllm --backend=python`): no `tensorrt` (tensorrt_plan) or onnxruntime backend,
# so the gpu tier runs its TensorRT plans from python models (canary_qwen/serving/trt_plan_model.py).
IMAGE_BACKENDS = ("ensemble", "python", "tensorrtllm")
