# seqbook: two commands on a fresh machine.
#   make book   -- build the site into _build/html/index.html
#   make test   -- unit tests + every chapter notebook under nbval + site checks
#   make test-kernels -- the notebooks again under other CPU kernel paths
# Both create the virtual environment .venv/ first when it is missing.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SITE   := _build/html/index.html
TORCH  := $(shell grep -E '^torch==' requirements.txt)
SOURCES := $(shell find book -type f ! -path '*/.ipynb_checkpoints/*') \
           $(wildcard seqbook_lib/*.py _ext/*.py) _config.yml _toc.yml references.bib

.PHONY: venv book test test-kernels unit execute clean

venv: $(STAMP)

# torch comes first, pinned, so that no other requirement pulls a CUDA build.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

book: $(SITE)

# From scratch (--all) and strict (-W): a warning, e.g. a broken reference or
# a notebook that fails to render, fails the build.
$(SITE): $(STAMP) $(SOURCES)
	./scripts/vendor_js.sh
	$(BIN)/jupyter-book build . --all -W --keep-going
	@echo "Site built: open $(abspath $(SITE))"

test: $(STAMP) $(SITE)
	$(BIN)/pytest --nbval --nbval-current-env --nbval-cell-timeout=600 \
	    --nbval-sanitize-with tests/nbval_sanitize.cfg

# The notebooks again under other CPU kernel paths, each against the same
# stored outputs (scripts/test_kernel_paths.sh): one machine standing in for
# CPUs without AVX-512 (avx2); also avx512, default (no AVX at all).
# KERNEL_SKIP: notebooks to leave out (CI leaves out the longest chapter).
KERNEL_PATHS ?= avx2
KERNEL_SKIP ?=
test-kernels: $(STAMP)
	BIN=$(BIN) KERNEL_SKIP="$(KERNEL_SKIP)" ./scripts/test_kernel_paths.sh $(KERNEL_PATHS)

unit: $(STAMP)
	$(BIN)/pytest tests

# Re-run a notebook in place and store its outputs: make execute NB=book/....ipynb
execute: | $(STAMP)
	@test -n "$(NB)" || { echo "usage: make execute NB=path/to/notebook.ipynb"; exit 2; }
	cd "$(dir $(NB))" && $(abspath $(BIN))/jupyter execute --inplace --timeout=600 "$(notdir $(NB))"

clean:
	rm -rf _build
