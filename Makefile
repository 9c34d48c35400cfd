PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

run: install
	$(BIN)/hydraissue serve --dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest -q -rs

bench: install
	$(BIN)/python tools/bench.py

# dist/hydraissue-linux-amd64 (a shiv zipapp), SHA256SUMS, latest.json and the release
# server's tree dist/hydraissue/$(CHANNEL)/ (docs/runbook.md, Auto-Update). Not part of test.
# SIGNING_KEY=key.pem (Ed25519) adds SHA256SUMS.sig, for servers with update.public_key.
CHANNEL ?= production
SIGNING_KEY ?=
.PHONY: release
release: install
	$(BIN)/python tools/release.py --channel $(CHANNEL) $(if $(SIGNING_KEY),--sign $(SIGNING_KEY))

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
