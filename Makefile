# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# What the tests need (every extra), and what the demo needs (the package, and huggingface_hub
# to fetch the lite release).
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp

.PHONY: demo test lint docs clean system-deps gpu-check

$(BIN)/pip:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[dev,geo,hf]'
	touch $(STAMP) $(DEMO_STAMP)

$(DEMO_STAMP): pyproject.toml | $(BIN)/pip
	$(BIN)/pip install --quiet -e '.[hf]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/birefnet demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Tests that use system tools: the report renders in headless Chromium, and GDAL's own
# command-line tools check the GeoTIFF masks (Debian packages chromium and gdal-bin).
system-deps:
	@command -v chromium >/dev/null 2>&1 && command -v gdalinfo >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver gdal-bin; }

test: lint system-deps
	$(BIN)/pytest -q

# The documentation site in site/ (the tests build it too, with --strict).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(BIN)/mkdocs build --strict

# On a machine with a GPU: every gpu-marked test and the GPU benchmark, one JSON summary (~8 min on an H100).
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) demo_input demo_output gpu_check_output site .pytest_cache .ruff_cache
