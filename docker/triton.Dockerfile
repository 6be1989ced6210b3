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
# upstream drops the engine path for the PyTorch backend). CUDA 12.9 also still runs
# on R535/R545/R570 data-center drivers (CUDA 13 based 25.11+ do not). Same image as
# export/ngc.py's NGC_IMAGE: engines only load in the TensorRT-LLM that built them.
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

# Dependencies first (cached layer): our `serve` + `export` dependencies from
# pyproject.toml; the base image's versions win, constraints.txt pins the rest.
COPY pyproject.toml constraints.txt docker/image_deps.py ./
RUN python3 image_deps.py requirements pyproject.toml > /tmp/requirements.txt \
    && python3 image_deps.py constraints constraints.txt > /tmp/overlay.txt \
    && pip install -c /tmp/overlay.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt /tmp/overlay.txt

COPY canary_qwen/ canary_qwen/
COPY export/ export/
COPY launcher/ launcher/
COPY model_repository/ model_repository/
# Editable: `export repository` reads its templates from model_repository/ beside the
# export package (export/repository.py TEMPLATES), so the tree stays where it is.
RUN pip install --no-deps -e . \
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
