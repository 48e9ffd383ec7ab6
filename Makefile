# thaw: `make serve` runs the service on the embedded default model; `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup model compile serve check test test-unit test-browser bench bench-gpu clean image test-image bench-image image-clean

# The image (docs/image.md): docker where a daemon answers, else podman with its state in build/.
IMAGE ?= thaw:cpu

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

# The tiny random-weight pipelines, built once into the cache (never committed): Stable Diffusion
# (the embedded default model), SDXL, SD3 and Flux, and Flux again as fp16 variant files.
model: setup
	$(BIN)/python infra/scripts/build_tiny_model.py --family sd sdxl sd3 flux
	$(BIN)/python infra/scripts/build_tiny_model.py --family flux --variant fp16

# thaw's own modules compiled to bytecode, as the Dockerfile does for the image: a start that
# compiles ~30 modules from source (PYTHONDONTWRITEBYTECODE, a read-only tree) pays ~0.2 s.
compile: setup
	$(BIN)/python -m compileall -q handler runtime bench infra/scripts

serve: model compile
	THAW_HOST=$(HOST) THAW_PORT=$(PORT) $(BIN)/python -m handler

check: setup
	$(BIN)/ruff check runtime handler tests infra bench
	$(BIN)/ruff format --check runtime handler tests infra bench
	$(BIN)/mypy

test: model check
	$(BIN)/python -m pytest

test-unit: setup
	$(BIN)/python -m pytest tests/unit

# The playground in a real headless Chromium (Debian's `chromium`; .ci/run installs it).
test-browser: model
	$(BIN)/python -m pytest -m browser tests/browser

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Benchmarks (ratios against baselines in one run; writes bench/results/). Generates a ~2 GB
# SD-1.5-shaped model on first use.
bench: model compile
	$(BIN)/python -m bench.suite

# With a CUDA GPU: cold load, first-inference cost, batching gain (bench/results/gpu.md).
bench-gpu: model compile
	$(BIN)/python -m bench.gpu_check

# The container image, built with whatever the machine has (Debian's podman is installed where
# neither it nor a docker daemon is); nothing is rebuilt when the hash of its inputs is unchanged.
image: setup
	@if ! { command -v docker >/dev/null && docker info >/dev/null 2>&1; }; then \
		infra/image/install-engine.sh; fi
	$(BIN)/python -m infra.image.build --tag $(IMAGE)

# Tests inside the image: HTTP and Lambda modes, read-only root, signals, bytecode.
test-image: image
	THAW_TEST_IMAGE=$(IMAGE) $(BIN)/python -m pytest tests/image

# Container start to /livez and /readyz, against the same server started outside it.
bench-image: image model
	$(BIN)/python -m bench.image_start --image $(IMAGE)

# Podman's private state, the stand-in base and the wheel mirror. Podman keeps its overlay folder
# mounted on itself, so it is unmounted first.
image-clean:
	-umount build/podman/storage/overlay 2>/dev/null
	rm -rf build/podman build/wheels build/tmp
