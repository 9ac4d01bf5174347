# The commands a newcomer types. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo --output_dir demo_output

test: $(STAMP)
	$(PY) -m pytest -q tests

# The README's numbers (about 25 minutes on 2 cores; bench_output/ keeps data and results).
bench: $(STAMP)
	$(PY) bench/coco_to_tfrecord.py --num_images 10000 --profile
	$(PY) bench/input_pipeline.py
	$(PY) bench/fcn_forward.py
	$(PY) bench/batch_segment.py --images 24 --memory

clean:
	rm -rf demo_output .pytest_cache build *.egg-info
