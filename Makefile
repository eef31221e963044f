# make demo   -- the whole tabular pipeline on the penguins dataset, end to end (under a minute)
# make test   -- create or reuse .venv, install nbtrain with the pinned constraints, run the tests
# make bench  -- the benchmarks (ratios against reference runs in the same run)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# Reinstall only when the project's requirements or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nbtrain demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_image.py
	$(PY) benchmarks/bench_text.py

clean:
	rm -rf $(VENV) .pytest_cache nbtrain-runs
