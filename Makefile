# Two promises (see README): `make demo` and `make test`, on a fresh machine
# with nothing but Python 3.11. Everything is installed into .venv here.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Size of the demo's training arrays (train split); validation is a tenth.
DEMO_GB ?= 1.0
DEMO_DIR ?= demo_data
PYTEST_ARGS ?=
TF_PIN := $(shell grep -o 'tensorflow==[0-9.]*' setup.cfg)

.PHONY: install demo test lint format clean bench

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml tfds_bigarrays/_read/core.cc tfds_bigarrays/_read/core.h \
		tfds_bigarrays/_read/op.cc tfds_bigarrays/_read/build.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	# The op is compiled against TensorFlow at install: install it first (the
	# pin of setup.cfg) and build in this venv rather than in an isolated copy.
	$(BIN)/python -m pip install '$(TF_PIN)'
	$(BIN)/python -m pip install --no-build-isolation -e '.[beam,hdf5,zarr,grain,torch,jax,test,dev]'
	touch $(STAMP)

demo: install
	$(BIN)/python examples/demo.py --gb $(DEMO_GB) --workdir $(DEMO_DIR)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy tfds_bigarrays

test: install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) $(DEMO_DIR) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
