# The two commands of the README:
#   make demo   install, then run the demo on the embedded database and serve its status page
#   make test   install (with test tools, SecantusDB, redis-server and Chromium), then run the
#               whole test suite twice: on the embedded database, then on a real MongoDB
#               wire-protocol server (a SecantusDB process the run starts; PROC_TEST_MONGODB_URI
#               to use another server instead)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install install-test demo test test-embedded test-real bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	./scripts/install-system-deps

demo: install
	$(BIN)/procctl demo

test: install-test
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --real-server

test-embedded: install-test
	$(BIN)/python -m pytest

test-real: install-test
	$(BIN)/python -m pytest --real-server

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
