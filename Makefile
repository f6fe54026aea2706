# Two commands: `make demo` runs the main job end to end on small data, `make test` runs the
# checks. Each creates .venv and installs what it needs, torch==2.13.0 first (on these machines
# the pin finds a CPU build on disk; on others pip takes that release's default build for the platform).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_PIN := torch==2.13.0

.PHONY: demo test lint wheel clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check amodalkit tests benchmarks tools setup.py
	$(BIN)/python -m pytest -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check amodalkit tests benchmarks tools setup.py

# dist/amodalkit-VERSION-py3-none-any.whl with the zoo inside (setup.py copies zoo/ to amodalkit/_zoo/);
# build/ is removed first so no stale module of an older build gets into the wheel
wheel: $(STAMP)
	rm -rf build
	$(BIN)/python -m pip wheel . --no-deps -w dist

demo: $(STAMP)
	$(BIN)/amodalkit gen-chewing-gum demo/data --preset savos2022 --train 0 --val 0 --test 200 --seed 0 --jobs 2
	$(BIN)/amodalkit info demo/data/test-00000.h5
	$(BIN)/amodalkit evaluate --model convex --data 'demo/data/test-*.h5' --json demo/convex.json
	$(BIN)/amodalkit evaluate --model zoo:savos-chewing-gum --data 'demo/data/test-*.h5' --json demo/savos.json
	$(BIN)/amodalkit show demo/data/test-00000.h5 --video 0 --model convex --model zoo:savos-chewing-gum --out demo/methods.png
	$(BIN)/amodalkit show demo/data/test-00000.h5 --video 0 --model zoo:savos-chewing-gum --out demo/savos.gif
	@echo "demo done: see demo/convex.json, demo/savos.json, demo/methods.png and demo/savos.gif"

clean:
	rm -rf demo .pytest_cache
