# Two entry points for a fresh machine: `make dashboard` and `make test` (both install first).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := chromium chromium-driver dataset-fashion-mnist
export HF_HUB_OFFLINE ?= 1

.PHONY: install system-packages dashboard test benchmark

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

system-packages:
	@if ! command -v chromium >/dev/null || [ ! -d /usr/share/datasets/fashion-mnist ]; then \
		$(SUDO) apt-get update -q && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q $(APT_PACKAGES); fi

install: system-packages $(VENV)/.installed

dashboard: install
	$(PY) -m clipsvd dashboard

test: install
	$(PY) -m pytest -q

benchmark: install
	$(PY) benchmarks/bench_core.py
