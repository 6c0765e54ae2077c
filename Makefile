# Two commands on a fresh machine:
#   make run    set up, then run the handler on test_input.json (tiny test model unless F5_MODEL is set)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
F5_MODEL ?= tiny

.PHONY: setup run test

$(VENV)/.installed: requirements.txt requirements-f5.txt requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -r requirements.txt -r requirements-test.txt
	# f5-tts without its own dependency list: see the note in requirements.txt
	$(BIN)/pip install --no-deps -r requirements-f5.txt
	touch $@

setup: $(VENV)/.installed

run: setup
ifeq ($(F5_MODEL),tiny)
	F5_MODEL=tiny $(BIN)/python model_cache.py make-test-model
endif
	F5_MODEL=$(F5_MODEL) $(BIN)/python runpod_handler.py

test: setup
	$(BIN)/python -m pytest
