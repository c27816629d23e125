# modelport — the only entry points: demo, test, check.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check clean proto upgrade-drill promtool

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the project metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/credit_rating/demo.py

# The slowest tests are printed on every run: a test that grows slow is seen where it is added.
test: $(STAMP) promtool
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

# The deploy/ tests run promtool (Debian package prometheus); install it when missing, with sudo unless root.
promtool:
	@command -v promtool >/dev/null 2>&1 || { SUDO=; [ "$$(id -u)" = 0 ] || ! command -v sudo >/dev/null || SUDO=sudo; \
		$$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends prometheus; }

check: $(STAMP)
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench
	$(BIN)/mypy

# Register the example under an older scikit-learn, then doctor and serve it under ours (docs/upgrades.md).
upgrade-drill: $(STAMP)
	$(BIN)/python examples/credit_rating/upgrade_drill.py

# Regenerate the gRPC modules from serving/protocol/inference.proto (they are committed).
proto: $(STAMP)
	cd src && ../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		modelport/serving/protocol/inference.proto

clean:
	rm -rf $(VENV) .venv-drill .modelport examples/credit_rating/out .mypy_cache .ruff_cache .pytest_cache
