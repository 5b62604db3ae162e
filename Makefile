# Two entry points that work on a fresh machine:
#   make demo   -- create .venv, install, run the main job on sample_data/
#   make test   -- create .venv, install, run the whole test suite
# and one more that CI runs (.ci/run):
#   make wheel-demo -- build the wheel, install it (not editable) into a fresh
#                      virtualenv and run `matta-rec demo` outside the checkout
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The fresh virtualenv of wheel-demo and the folder the demo runs in (both
# outside the checkout, both replaced on every run).
WHEEL_VENV ?= /tmp/matta_rec_wheel_venv
WHEEL_DEMO ?= /tmp/matta_rec_wheel_demo

.PHONY: install demo test wheel wheel-demo clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/matta-rec demo --data sample_data --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

# build/ is removed too: setuptools would copy stale modules from it into the wheel.
wheel: $(STAMP)
	rm -rf dist build
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .

# Runtime requirements only (no dev extra): a missing one fails the demo.
wheel-demo: wheel
	rm -rf $(WHEEL_VENV) $(WHEEL_DEMO)
	$(PYTHON) -m venv $(WHEEL_VENV)
	$(WHEEL_VENV)/bin/python -m pip install --quiet dist/matta_rec-*.whl
	mkdir -p $(WHEEL_DEMO)
	cd $(WHEEL_DEMO) && $(WHEEL_VENV)/bin/python -c "import matta_rec; print(matta_rec.__file__)" \
	    | grep "$(WHEEL_VENV)/.*/site-packages/matta_rec/"
	cd $(WHEEL_DEMO) && $(WHEEL_VENV)/bin/matta-rec demo --out demo
	test -s $(WHEEL_DEMO)/demo/report/report.md
	test -s $(WHEEL_DEMO)/demo/report/demo_table.md

clean:
	rm -rf $(VENV) runs exports reports dist build
