# Two commands matter: `make lab` (learn) and `make test` (check). Everything else is a helper.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 3000
LAB_PORT ?= 8888

ROOM_PORT ?= 3000

.PHONY: lab test lint format walkthrough sandbox room bench soak browser-deps clean help

help:
	@echo "make lab          set up, start the sandbox and JupyterLab on notebooks/"
	@echo "make test         set up, then run every test and lint check"
	@echo "make walkthrough  run the whole tutorial headless (sandbox unless TILEDESK_API_URL is set)"
	@echo "make sandbox      run the embedded Tiledesk sandbox on $(HOST):$(PORT)"
	@echo "make room         run the sandbox for a workshop room (every interface, room view)"
	@echo "make bench        run the benchmarks under bench/"
	@echo "make soak         run the long reliability tests"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)

# Reinstalls only when the dependency list changes, so a second `make` is fast.
$(STAMP): $(BIN)/python pyproject.toml requirements.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tiledesk-tutorial)" >/dev/null
	touch $(STAMP)

browser-deps:
	@bash tools/ensure-chromium.sh

lab: $(STAMP)
	@bash tools/lab.sh "$(BIN)" "$(HOST)" "$(PORT)" "$(LAB_PORT)"

test: $(STAMP) browser-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not soak and not live" -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

walkthrough: $(STAMP)
	$(BIN)/python -m tiledesk_tutorial walkthrough

sandbox: $(STAMP)
	$(BIN)/python -m tiledesk_tutorial.sandbox --host $(HOST) --port $(PORT) --data ./.sandbox

# A workshop: learners on the LAN use this sandbox; its data is kept apart from your own .sandbox.
room: $(STAMP)
	$(BIN)/python -m tiledesk_tutorial.sandbox --room --port $(ROOM_PORT) --data ./.sandbox-room

bench: $(STAMP)
	$(BIN)/python bench/run.py

soak: $(STAMP)
	$(BIN)/python -m pytest -m soak -p no:cacheprovider

clean:
	rm -rf $(VENV) .sandbox .sandbox-room .pytest_cache build *.egg-info
