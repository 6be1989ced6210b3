# syntax=docker/dockerfile:1
# Triton Inference Server for the gpu tier (TensorRT encoder/adapter, TensorRT-LLM
# for Qwen3), plus our python models, exporter and launcher.
# Build from the repository root: docker build -f docker/triton.Dockerfile -t canary-qwen-triton .
#
# Why 25.10: it ships TensorRT-LLM 1.0.0 (TensorRT 10.11, CUDA 12.9, driver >= 575,
# or a data-center driver with CUDA forward compatibility), the first release whose
# TensorRT-engine path converts Qwen3 (dense) checkpoints (NVIDIA/TensorRT-LLM#5650),
# and its Triton backend still serves that engine with the multimodal prompt table
# (`prompt_embedding_table`, deprecated, end of life with TensorRT-LLM 1.2; newer
# upstream drops the engine path for the PyTorch backend). Keep this tag equal to
# the container constant in export/trtllm.py: engines only load in the
# TensorRT-LLM version that built them.
FROM nvcr.io/nvidia/tritonserver:25.10-trtllm-python-py3

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# NGC images manage their Python packages themselves; allow pip next to them.
# TRITON_*: launcher settings (launcher/settings.py): listen on every interface, and
# allow the TensorRT-LLM engines the time they take to load.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models \
    HF_HOME=/models/.cache/huggingface \
    TRITON_HOST=0.0.0.0 \
    TRITON_READY_TIMEOUT_SECS=1800

WORKDIR /opt/canary-qwen

# Dependencies first (cached layer): the base image's versions win, our pins fill the rest.
COPY constraints.txt docker/triton-requirements.txt docker/pin_overlay.py ./
RUN python3 pin_overlay.py constraints.txt > /tmp/overlay.txt \
    && pip install -c /tmp/overlay.txt -r triton-requirements.txt \
    && rm /tmp/overlay.txt

COPY pyproject.toml ./
COPY canary_qwen/ canary_qwen/
COPY export/ export/
COPY launcher/ launcher/
COPY model_repository/ model_repository/
RUN pip install --no-deps . \
    && mkdir -p /models \
    && chown 1000:1000 /models

COPY --chmod=0755 docker/triton-entrypoint.sh /usr/local/bin/triton-entrypoint

# The NGC image's unprivileged user (triton-server, uid 1000).
USER 1000:1000
WORKDIR /models
VOLUME ["/models"]
EXPOSE 8000 8001 8002

HEALTHCHECK --interval=15s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('TRITON_HTTP_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["/usr/local/bin/triton-entrypoint"]
CMD ["serve"]
