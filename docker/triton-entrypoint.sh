#!/usr/bin/env bash
# Entrypoint of the Triton image.
#
#   triton-entrypoint serve [launcher args...]  export the gpu tier if the repository
#                                               is missing, then run tritonserver (default)
#   triton-entrypoint export                    fetch the checkpoint if needed, export, exit
#   triton-entrypoint wait                      block until the repository is complete
#   triton-entrypoint <anything else>           run it as a command (debugging)
#
# Environment (defaults in brackets):
#   MODEL_DIR [/models]                   the shared model volume
#   CHECKPOINT_DIR [$MODEL_DIR/checkpoint]  hub-layout checkpoint (config.json, model.safetensors,
#                                           llm_backbone/config.json, tokenizer files); may be read-only
#   HF_DOWNLOAD_DIR [$MODEL_DIR/checkpoint]  where a hub download goes when CHECKPOINT_DIR is empty
#   ARTIFACTS_DIR [$MODEL_DIR/artifacts]  `export build` output, TensorRT and TensorRT-LLM engines
#   REPOSITORY_DIR [$MODEL_DIR/model_repository]  filled Triton repository; `.complete` marks it done
#   HF_CHECKPOINT_REPO, HF_CHECKPOINT_REVISION [main]  download the checkpoint from the hub
#   HF_TOKENIZER_REPO [Qwen/Qwen3-1.7B], HF_TOKENIZER_REVISION [main]  its LLM config + tokenizer
#   HF_TOKEN                              hub token (gated or private repositories)
#   EXPORT_ON_START [true]                `serve` exports when the repository is missing
#   EXPORT_TRT_ARGS, EXPORT_TRTLLM_ARGS   extra flags for `export trt` / `export trtllm`
#   WAIT_TIMEOUT_S [86400]                how long `wait` waits
set -euo pipefail

MODEL_DIR="${MODEL_DIR:-/models}"
CHECKPOINT_DIR="${CHECKPOINT_DIR:-$MODEL_DIR/checkpoint}"
ARTIFACTS_DIR="${ARTIFACTS_DIR:-$MODEL_DIR/artifacts}"
REPOSITORY_DIR="${REPOSITORY_DIR:-$MODEL_DIR/model_repository}"

log() { echo "[triton-entrypoint] $*" >&2; }

repository_complete() { [[ -f "$REPOSITORY_DIR/.complete" ]]; }

has_checkpoint() { [[ -f "$1/config.json" && -f "$1/model.safetensors" ]]; }

# Use $CHECKPOINT_DIR when it holds a checkpoint; else the download folder on the model
# volume (fetched from the hub once, kept for later exports).
fetch_checkpoint() {
  has_checkpoint "$CHECKPOINT_DIR" && return 0
  local download="${HF_DOWNLOAD_DIR:-$MODEL_DIR/checkpoint}"
  if ! has_checkpoint "$download"; then
    if [[ -z "${HF_CHECKPOINT_REPO:-}" ]]; then
      log "no checkpoint in $CHECKPOINT_DIR or $download, and HF_CHECKPOINT_REPO is not set"
      return 1
    fi
    log "downloading $HF_CHECKPOINT_REPO and ${HF_TOKENIZER_REPO:-Qwen/Qwen3-1.7B} config/tokenizer into $download"
    mkdir -p "$download"
    # The hub checkpoint has no tokenizer: the Qwen3 config and tokenizer files go beside it.
    python3 - "$download" <<'PY'
import os
import sys

from huggingface_hub import snapshot_download

target = sys.argv[1]
snapshot_download(
    os.environ["HF_CHECKPOINT_REPO"],
    revision=os.environ.get("HF_CHECKPOINT_REVISION", "main"),
    local_dir=target,
)
# canary_qwen/checkpoint.py layout: the Qwen3 config in llm_backbone/, its tokenizer at the top.
llm = os.environ.get("HF_TOKENIZER_REPO", "Qwen/Qwen3-1.7B")
llm_revision = os.environ.get("HF_TOKENIZER_REVISION", "main")
snapshot_download(llm, revision=llm_revision, local_dir=os.path.join(target, "llm_backbone"),
                  allow_patterns=["config.json", "generation_config.json"])
snapshot_download(llm, revision=llm_revision, local_dir=target,
                  allow_patterns=["tokenizer.json", "tokenizer_config.json"])
PY
  fi
  CHECKPOINT_DIR="$download"
}

export_gpu_tier() {
  if repository_complete; then
    log "repository $REPOSITORY_DIR is complete; nothing to export"
    return 0
  fi
  fetch_checkpoint
  log "exporting the gpu tier: $CHECKPOINT_DIR -> $ARTIFACTS_DIR -> $REPOSITORY_DIR"
  # Word splitting of the *_ARGS variables is intended: they hold extra flags.
  # shellcheck disable=SC2086
  {
    python3 -m export build --checkpoint "$CHECKPOINT_DIR" --out "$ARTIFACTS_DIR"
    python3 -m export trt --artifacts "$ARTIFACTS_DIR" ${EXPORT_TRT_ARGS:-}
    python3 -m export trtllm --artifacts "$ARTIFACTS_DIR" ${EXPORT_TRTLLM_ARGS:-}
    python3 -m export repository --artifacts "$ARTIFACTS_DIR" --tier gpu --out "$REPOSITORY_DIR"
  }
  repository_complete || { log "export finished without $REPOSITORY_DIR/.complete"; return 1; }
}

wait_for_repository() {
  local deadline=$((SECONDS + ${WAIT_TIMEOUT_S:-86400}))
  until repository_complete; do
    if ((SECONDS >= deadline)); then
      log "timed out waiting for $REPOSITORY_DIR/.complete"
      return 1
    fi
    log "waiting for the export to complete $REPOSITORY_DIR"
    sleep 10
  done
}

command="${1:-serve}"
[[ $# -gt 0 ]] && shift
case "$command" in
  serve)
    if [[ "${EXPORT_ON_START:-true}" == "true" ]]; then
      export_gpu_tier
    else
      wait_for_repository
    fi
    exec python3 -m launcher triton --repository "$REPOSITORY_DIR" "$@"
    ;;
  export) export_gpu_tier ;;
  wait) wait_for_repository ;;
  *) exec "$command" "$@" ;;
esac
