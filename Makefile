# headlab: two commands on a fresh machine.
#   make scan   create .venv, install, prepare the default model, scan it, print the top heads
#   make test   the same set-up (+ Debian's chromium for the browser test), then lint, the
#               layer contracts, the type checker and the whole test suite (what CI runs)
#   make notebooks  execute notebooks/*.ipynb in place (their PNGs need the same chromium)
#   make wheelhouse     .wheelhouse/: the wheels an offline GPU machine lacks (scripts/gpu-wheels.txt)
#   make gpu-check      on that machine: scripts/gpu_check.sh (gpu tests, bench at 8k/32k/128k)
#   make gpu-check-dry  the same script here, on CPU, with the small model and short lengths
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.headlab-installed

.PHONY: setup browser scan test notebooks bench clean-venv wheelhouse gpu-check gpu-check-dry

setup: $(STAMP)

# Re-install whenever the pinned metadata changes.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3
	# torch first, pinned: its CPU wheel is on this machine's disk (an unpinned torch pulls CUDA).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/headlab prepare smollm2-135m gemma-3-270m
	touch $(STAMP)

# Debian's Chromium and its driver, for the one real-browser test of the dashboard.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; else \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

scan: setup
	$(BIN)/headlab scan

test: setup browser
	$(BIN)/ruff check headlab probes analyses dashboard notebooks tests
	$(BIN)/ruff format --check headlab probes analyses dashboard notebooks tests
	$(BIN)/lint-imports --no-logo
	$(BIN)/mypy
	$(BIN)/python -m pytest

# Run every notebook top to bottom and save it executed, with a PNG beside each figure;
# `python -m notebooks.refresh NAME ...` refreshes some.
notebooks: setup browser
	$(BIN)/python -m notebooks.refresh

clean-venv:
	rm -rf $(VENV)

bench: setup
	$(BIN)/headlab bench

WHEELHOUSE ?= .wheelhouse
# CPython 3.12 on x86-64 Linux: the GPU machine's interpreter (pip matches each platform tag).
PY312 := --python-version 3.12 --implementation cp --only-binary=:all: \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 --platform any

wheelhouse:
	rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	$(BIN)/python -m pip download --quiet --no-deps $(PY312) -d $(WHEELHOUSE) \
		-r scripts/gpu-wheels.txt
	$(BIN)/python -m pip wheel --quiet --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	rm -rf build  # setuptools' scratch folder from the wheel just built
	@du -sm $(WHEELHOUSE) | awk '{ print "wheelhouse: " $$1 " MB"; if ($$1 >= 60) exit 1 }'

gpu-check:
	scripts/gpu_check.sh

gpu-check-dry:
	PYTHON=$(BIN)/python scripts/gpu_check.sh --dry
