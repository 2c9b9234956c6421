# ssl_study: `make study` runs the study, `make test` runs the tests.
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SCALE  ?= quick
PAPERS ?=
JOBS   ?= 2
SKIP_BROWSER ?=
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

# Debian's Chromium, for tests/test_jupyterlab.py (a reader's Run All Cells in JupyterLab). As root with apt-get,
# this INSTALLS A SYSTEM PACKAGE (apt-get install chromium); SKIP_BROWSER=1 skips it, and the test with it.
browser:
	@if [ -n "$(SKIP_BROWSER)" ]; then echo "browser: SKIP_BROWSER is set: no Chromium; tests/test_jupyterlab.py is skipped"; \
	elif [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "browser: installing the system package chromium (apt-get, as root) for the JupyterLab browser test; SKIP_BROWSER=1 skips this"; \
	  apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	else echo "browser: no /usr/bin/chromium and not root: tests/test_jupyterlab.py will be skipped"; fi

study: install data
	$(BIN)/ssl-study run --scale $(SCALE) --jobs $(JOBS) $(if $(PAPERS),--papers $(PAPERS))

# The paper notebooks run once: in JupyterLab (tests/test_jupyterlab.py) when Chromium is there, else in nbdev_test.
# Prints each part's time and the total.
PAPER_NBS := ^([_.]|0[0-9][a-z]?_(pyramid|simclr|simsiam|selfie|overlay|leaderboard))
test: install data browser
	@t0=$$(date +%s); rc=0; skip='^[_.]'; \
	if [ -x /usr/bin/chromium ] && [ -z "$(SKIP_BROWSER)" ]; then skip='$(PAPER_NBS)'; \
	  echo "nbdev_test: the toolbox notebooks (nbs/core) and index; the paper notebooks run in JupyterLab (pytest)"; fi; \
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing --skip_file_re "$$skip" || rc=1; t1=$$(date +%s); \
	SKIP_BROWSER="$(SKIP_BROWSER)" $(BIN)/python -m pytest tests -q --durations=15 || rc=1; t2=$$(date +%s); \
	echo "make test: nbdev_test $$((t1 - t0)) s + pytest $$((t2 - t1)) s = $$(((t2 - t0) / 60)) min $$(((t2 - t0) % 60)) s"; \
	exit $$rc

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
