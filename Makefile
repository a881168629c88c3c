# qkv: two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: demo test test-slow lint venv clean data

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned, so pip takes the CPU build on disk instead of a CUDA one from the index.
	# --no-compile, then compileall on every core: pip compiles bytecode on one core (most of
	# the set-up time), and the bytecode must exist, since PYTHONDONTWRITEBYTECODE=1 (set on
	# these machines) keeps Python from writing it on import: without it every test process
	# compiles torch again (make test: 6:11 -> 7:56). As pip does, files that do not compile
	# (a package's Python 2 examples) are skipped, not fatal. src: qkv's own (editable) modules.
	$(PY) -m pip install --quiet --no-compile "$(TORCH)"
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	$(PY) -m compileall -q -j 0 src $$($(PY) -c 'import sysconfig; print(sysconfig.get_path("purelib"))') > /dev/null || true
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qkv demo

test: $(STAMP)
	# worksteal: idle workers take tests from busy ones (measured on 2 cores: 5:24 against 6:31 with
	# loadfile, whose last big file ran alone on one worker)
	$(PY) -m pytest -q -n auto --dist worksteal || [ $$? -eq 5 ]

test-slow: $(STAMP)
	# exit 5 = no test collected: not a failure when no test is marked slow
	$(PY) -m pytest -q -m slow -p no:cacheprovider || [ $$? -eq 5 ]

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts
	$(VENV)/bin/lint-imports

# Debian's package descriptions in English (qkv.data.debian) and their translations by people
# (qkv.data.debian_parallel: the translate task's corpus), into /var/lib/apt/lists; needs root
DATA_LANGS ?= en,de,fr,it

data:
	ls /var/lib/apt/lists/*_i18n_Translation-it* >/dev/null 2>&1 || \
		$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -o Acquire::Languages=$(DATA_LANGS)

clean:
	rm -rf $(VENV) build dist *.egg-info src/*.egg-info .pytest_cache
