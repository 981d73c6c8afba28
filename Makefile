# headlab: two commands on a fresh machine.
#   make scan   create .venv, install, prepare the default model, scan it, print the top heads
#   make test   the same set-up (+ Debian's chromium for the browser test), then lint, the
#               layer contracts, the type checker and the whole test suite (what CI runs)
#   make notebooks  execute notebooks/*.ipynb in place (their PNGs need the same chromium)
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.headlab-installed

.PHONY: setup browser scan test notebooks bench clean-venv

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
