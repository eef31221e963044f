# make demo   -- the whole tabular pipeline on the penguins dataset, end to end (under a minute)
# make lab    -- JupyterLab on the template notebooks (notebooks/), in this project's environment
# make test   -- create or reuse .venv, install nbtrain with the pinned constraints, run the tests
# make bench  -- the benchmarks (ratios against reference runs in the same run)
# make gpu-check -- on a GPU machine: every kind's fit on CUDA beside hand-written loops, devices="all" (< 8 min)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# a second ipykernel line for the kernel and browser tests (tests/kernels.py), beside the environment's
KERNELS = .kernels/ipykernel-6

.PHONY: install demo lab kernels test bench gpu-check clean

install: $(STAMP)

# Reinstall only when the project's requirements or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nbtrain demo

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

kernels: $(KERNELS)/.installed

# Without dependencies: the environment has them; only ipykernel itself (and its nest-asyncio) differ.
$(KERNELS)/.installed: tests/ipykernel6.txt $(STAMP)
	rm -rf $(KERNELS)
	$(PY) -m pip install --quiet --no-deps --target $(KERNELS) -r tests/ipykernel6.txt
	touch $@

test: $(STAMP) $(KERNELS)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py --device cuda --out gpu_check.json

bench: $(STAMP)
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_image.py
	$(PY) benchmarks/bench_text.py

clean:
	rm -rf $(VENV) .kernels .pytest_cache nbtrain-runs
