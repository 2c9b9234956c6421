# ssl_study: `make study` runs the study, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCALE  ?= quick
PAPERS ?=
JOBS   ?= 2
SHARED_DATA ?= ../shared/data
export SSL_STUDY_DATA ?= $(HOME)/.cache/ssl_study/data

.PHONY: install data browser study test lab bench clean-outputs readme

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Stage the real datasets shipped beside the project (if any) into the data root.
data:
	@if [ -x "$(SHARED_DATA)/stage" ]; then "$(SHARED_DATA)/stage" "$(SSL_STUDY_DATA)"; \
	else echo "data: no $(SHARED_DATA)/stage; datasets are read from $(SSL_STUDY_DATA) (see README)"; fi

# Debian's Chromium, for tests/test_jupyterlab.py (a reader's Run All Cells in JupyterLab); that test skips without it.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium (apt-get) for the JupyterLab browser test"; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	else echo "browser: no /usr/bin/chromium and not root: tests/test_jupyterlab.py will be skipped"; fi

study: install data
	$(BIN)/ssl-study run --scale $(SCALE) --jobs $(JOBS) $(if $(PAPERS),--papers $(PAPERS))

test: install data browser
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing
	$(BIN)/python -m pytest tests -q --durations=15

lab: install data
	$(BIN)/jupyter lab nbs

bench: install data
	$(BIN)/python benchmarks/overlay_throughput.py
	$(BIN)/python benchmarks/ssl_epoch.py

clean-outputs:
	rm -rf outputs/smoke outputs/quick outputs/cache

# README.md is generated from nbs/index.ipynb (nbdev_readme needs quarto; nbconvert does not)
readme: install
	$(BIN)/jupyter nbconvert --to markdown --log-level WARN nbs/index.ipynb --output-dir . --output README
