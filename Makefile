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
	# --no-compile: pip's bytecode pass over every module (thousands never imported, most of
	# the set-up time: venv 2:14 -> 1:01) is skipped. Where PYTHONDONTWRITEBYTECODE=1 is set (as
	# on these machines) Python would then compile on every start, so the CLI's imports are
	# compiled once here, and make test lets the suite write what else it imports.
	$(PY) -m pip install --quiet --no-compile "$(TORCH)"
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	env -u PYTHONDONTWRITEBYTECODE $(PY) -c "import qkv.cli"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/qkv demo

test: $(STAMP)
	# worksteal: idle workers take tests from busy ones (measured on 2 cores: 5:24 against 6:31 with
	# loadfile, whose last big file ran alone on one worker)
	# bytecode written once for the modules the suite imports (see the venv's comment): without
	# it every test process compiles them again (6:11 -> 7:56)
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -n auto --dist worksteal || [ $$? -eq 5 ]

test-slow: $(STAMP)
	# exit 5 = no test collected: not a failure when no test is marked slow
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -q -m slow -p no:cacheprovider || [ $$? -eq 5 ]

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
