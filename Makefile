# Two set-up commands for a fresh machine:
#   make demo  - create .venv, install, upscale the bundled sample clip with the default model
#   make test  - create/update .venv, lint (ruff), type-check (mypy; TensorRT code against tensorrt-stubs and
#                stubs generated from TensorRT-RTX), run pytest (NVIDIA's parser + builder via TensorRT-RTX included)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# constraints.txt pins torch to the CPU wheel; pip.conf caps on some machines are respected too.
INSTALL := $(PIP) install --disable-pip-version-check -q -c constraints.txt
STUBS := tensorrt-stubs==10.13.0.35.1
# The Triton Inference Server the serving tests start (tests/test_triton_server.py, tools/triton_server.py): the
# nvidia-pytriton wheel's server binary, in a folder of its own and without its dependencies (it pins numpy<2;
# the binary needs no Python package).
TRITON_SERVER := .triton-server
TRITON_BIN := $(TRITON_SERVER)/pytriton/tritonserver/bin/tritonserver
PYTRITON := nvidia-pytriton==0.7.0
DEMO_OUT ?= demo-out

.PHONY: demo test lint typecheck pytest install install-dev clean gpu-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(INSTALL) -e '.[cpu]'
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(INSTALL) -e '.[cpu,dev]'
	# tensorrt-stubs declares TensorRT's download-only packages as deps: install it alone, then fix it for mypy.
	$(PIP) install --disable-pip-version-check -q --no-deps $(STUBS)
	$(BIN)/python tools/fix_tensorrt_stubs.py
	# TensorRT-RTX ships no type information: stubs generated from the installed module
	$(BIN)/python tools/rtx_stubs.py
	@touch $@

install: $(VENV)/.installed
$(TRITON_BIN): | $(BIN)/python
	$(PIP) install --disable-pip-version-check -q --no-deps --upgrade --target $(TRITON_SERVER) $(PYTRITON)

install-dev: $(VENV)/.installed-dev $(TRITON_BIN)

demo: install
	@mkdir -p $(DEMO_OUT)
	$(BIN)/srgan-deploy video samples/bbb_2s_180p.mp4 $(DEMO_OUT)/bbb_2s_x4.mp4 --overwrite
	$(BIN)/srgan-deploy video samples/bbb_2s_180p.mp4 $(DEMO_OUT)/bbb_2s_side_by_side.mp4 --side-by-side --max-frames 24 --overwrite
	@echo "demo output: $(DEMO_OUT)/bbb_2s_x4.mp4 (4x) and $(DEMO_OUT)/bbb_2s_side_by_side.mp4 (left bicubic, right model)"

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

pytest: install-dev
	$(BIN)/pytest -q

test: lint typecheck pytest

# On a machine with an NVIDIA GPU (minutes): installs the extra for the driver's CUDA, runs pytest -m gpu,
# exports, bench and a 1080p video per GPU backend against torch; writes gpu-check.json. Without a GPU it
# says so in one line and exits 2 (a check that did not run must not look passed).
gpu-check: install-dev
	@$(BIN)/python tools/gpu_check.py --json gpu-check.json --work gpu-check-work

clean:
	rm -rf $(VENV) $(TRITON_SERVER) $(DEMO_OUT) .pytest_cache .mypy_cache .ruff_cache gpu-check-work
