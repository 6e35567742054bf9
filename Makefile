# Two entry points for a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,geo,hf]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/birefnet demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Tests that use system tools: the report renders in headless Chromium, and GDAL's own
# command-line tools check the GeoTIFF masks (Debian packages chromium and gdal-bin).
system-deps:
	@command -v chromium >/dev/null 2>&1 && command -v gdalinfo >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
		{ apt-get update -qq && apt-get install -y -qq chromium chromium-driver gdal-bin; }

test: lint system-deps
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) demo_input demo_output .pytest_cache .ruff_cache
