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
EXTRAS := beam,hdf5,zarr,grain,torch,jax,test,dev
PIP := $(BIN)/python -m pip
# A registry connection can drop in the middle of a download (a CI run once lost
# the 572 MB TensorFlow wheel at 43 MB): pip resumes each download many times,
# and each install step is tried again whole, up to 4 times, before make fails.
export PIP_RESUME_RETRIES ?= 50
export PIP_RETRIES ?= 10
retry = for attempt in 1 2 3 4; do $(1) && break; \
	if [ $$attempt = 4 ]; then exit 1; fi; \
	echo "make: install step failed (attempt $$attempt of 4), retrying in 15 s" >&2; sleep 15; done

.PHONY: install demo test lint format clean bench

install: $(STAMP)

$(STAMP): setup.cfg setup.py pyproject.toml tfds_bigarrays/_read/core.cc tfds_bigarrays/_read/core.h \
		tfds_bigarrays/_read/op.cc tfds_bigarrays/_read/build.py
	@free=$$(df -Pk . | awk 'NR == 2 { print int($$4 / 1048576) }'); \
	if [ "$$free" -lt 6 ]; then echo "make: warning: $$free GB free on this disk;" \
		".venv takes 4.5 GB and the tests write up to 2 GB more: free some space" \
		"if pip stops with 'No space left on device'" >&2; fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(call retry,$(PIP) install --upgrade pip setuptools wheel)
	# The op is compiled against TensorFlow at install: install it first (the
	# pin of setup.cfg) and build in this venv rather than in an isolated copy.
	$(call retry,$(PIP) install '$(TF_PIN)')
	$(call retry,$(PIP) install --no-build-isolation -e '.[$(EXTRAS)]')
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
