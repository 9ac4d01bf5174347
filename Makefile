# The commands a newcomer types. Everything runs inside .venv, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast fuzz browser labelstudio bench mutate clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m pipelines.demo --output_dir demo_output

# Two pytest workers (pytest-xdist): the tests that share the trained model stay on one of them.
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup tests

# Everything but the tests marked slow (training, whole pipelines on real models): about two minutes.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

# Fuzzing with new draws and a larger budget than CI's fixed one (tests/test_fuzz.py): N examples
# per property (N/20 whole COCO jobs, N/10 command lines). N=10000: about a quarter of an hour.
N ?= 10000
fuzz: $(STAMP)
	SEGPIPE_FUZZ_EXAMPLES=$(N) $(PY) -m pytest -q tests/test_fuzz.py

# Debian's chromium and chromedriver for the report's browser test (root, or sudo).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ $$(command -v sudo) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$(command -v sudo) \
	  apt-get install -y -qq chromium chromium-driver; }

# Label Studio in a venv of its own (its Django stack stays out of the project's) for the test
# that runs segpipe serve labelstudio under it (tests/test_label_studio_server.py).
labelstudio:
	test -x .labelstudio/bin/label-studio || { $(PYTHON) -m venv .labelstudio && \
	  .labelstudio/bin/pip install --quiet 'label-studio==1.23.*'; }

# The README's numbers (about 25 minutes on 2 cores; bench_output/ keeps data and results).
bench: $(STAMP)
	$(PY) bench/coco_to_tfrecord.py --num_images 10000 --profile
	$(PY) bench/input_pipeline.py
	$(PY) bench/fcn_forward.py
	$(PY) bench/batch_segment.py --images 24 --memory

# Mutation testing of the pure modules (setup.cfg [mutmut]) against their fast unit tests; prints
# the score per module and exits non-zero below 85 %. Not part of `make test` (minutes).
mutate: $(STAMP)
	$(PY) -m pip install --quiet "mutmut>=3.8,<4"
	SEGPIPE_TESTDATA=$(abspath ../shared/testdata) $(VENV)/bin/mutmut run --max-children 2 || true
	$(PY) bench/mutation_score.py

clean:
	rm -rf demo_output .pytest_cache build *.egg-info mutants
