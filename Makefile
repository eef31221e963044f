# make demo   -- the whole tabular pipeline on the penguins dataset, end to end (under a minute)
# make lab    -- JupyterLab on the template notebooks (notebooks/), in this project's environment
# make test   -- create or reuse .venv, install nbtrain with the pinned constraints, run the tests
# make bench  -- the benchmarks (ratios against reference runs in the same run)
# make gpu-check -- on a GPU machine: every kind's fit on CUDA beside hand-written loops, devices="all" (< 8 min)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed
# more ipykernel lines for the kernel and browser tests (tests/kernels.py), beside the environment's:
# the newest 6.x, and Colab's (tests/kernel-lines/<name>.txt installs .kernels/<name>/)
KERNELS = .kernels/ipykernel-6/.installed .kernels/ipykernel-6.17.1/.installed

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

kernels: $(KERNELS)

# Without dependencies: the environment has them; only what the line's own file lists differs.
.kernels/%/.installed: tests/kernel-lines/%.txt $(STAMP)
	rm -rf $(@D)
	$(PY) -m pip install --quiet --no-deps --target $(@D) -r $<
	touch $@

test: $(STAMP) $(KERNELS)
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
