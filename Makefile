# rnnsuite — `make setup` then `make test`. Every target runs inside the project's venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RNNSUITE := $(VENV)/bin/rnnsuite
RUNS ?= runs
EXPORTS ?= exports
PRESET ?= small

# Debian packages behind the embedded corpora (DESIGN.md): TTS engines and voices for the
# spoken corpus, public-domain text, the two Bibles for translation, apertium as a peer;
# IRSTLM builds the speech recognizer's word language model.
SYSTEM_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k \
	festvox-us-slt-hts fortunes sword-text-web sword-text-sparv \
	apertium-eng-spa libsndfile1 irstlm
# Optional: SVOX Pico's voices (Apache-2.0, but the voice data comes without source) are in
# Debian's non-free component (Ubuntu: multiverse), which `make setup` adds on Debian where
# it is missing. Where they still can't be installed, setup goes on and the speech corpus
# is made without them (it warns, naming the package).
OPTIONAL_PACKAGES := libttspico-utils
NON_FREE_SOURCES := /etc/apt/sources.list.d/rnnsuite-non-free.sources

.PHONY: setup system-packages test test-fast lint format demo bench bench-quick gpu-check clean \
	train-speech train-action train-caption train-translation train-video train-nlp \
	export-speech export-action export-caption export-translation

setup: system-packages $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

system-packages:
	@required=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	optional=$$(for p in $(OPTIONAL_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	missing=$$(echo $$required $$optional); \
	if [ -z "$$missing" ]; then echo "system packages: all installed"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else \
		echo "rnnsuite needs these system packages; install them with:"; \
		echo "  sudo apt-get install -y $$missing"; \
		exit 0; \
	fi; \
	if [ -n "$$optional" ] && grep -qx "ID=debian" /etc/os-release 2>/dev/null \
		&& ! grep -rqsE "^[^#]*\bnon-free(\s|$$)" /etc/apt/sources.list /etc/apt/sources.list.d; then \
		codename=$$(. /etc/os-release && echo $$VERSION_CODENAME); \
		echo "adding Debian's non-free component for $(OPTIONAL_PACKAGES): $(NON_FREE_SOURCES)"; \
		printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
			"$$codename" | $$sudo tee $(NON_FREE_SOURCES) >/dev/null; \
	fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends"; \
	$$sudo apt-get update -qq || exit 1; \
	if [ -n "$$required" ]; then $$install $$required || exit 1; fi; \
	for p in $$optional; do \
		$$install $$p || echo "optional package $$p could not be installed; the speech corpus is made without it"; \
	done

# Tests run in parallel workers, a test file per worker (its module fixtures train once);
# most toy trainings are too small to keep two cores busy on their own.
TEST_WORKERS ?= 2
test:
	$(PY) -m pytest -q --durations=10 -n $(TEST_WORKERS) --dist loadfile

test-fast:
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadfile

lint:
	$(VENV)/bin/ruff check shared suite tests bench
	$(VENV)/bin/ruff format --check shared suite tests bench

format:
	$(VENV)/bin/ruff format shared suite tests
	$(VENV)/bin/ruff check --fix shared suite tests

demo:
	$(PY) -m shared.demo

train-speech train-action train-caption train-translation: train-%:
	$(RNNSUITE) $* train --run-dir $(RUNS)/$* --preset $(PRESET)
train-video: train-action
train-nlp: train-translation

export-speech export-action export-caption export-translation: export-%:
	$(RNNSUITE) $* export --run-dir $(RUNS)/$* --out $(EXPORTS)/$*

# Speed side by side with plain Keras, PyTorch (the `bench` extra, skipped when absent),
# librosa and the published examples, then each small preset's quality under its time
# budget; writes bench/results/<timestamp>.json + .md and README's benchmark section.
bench:
	$(PY) -m bench.run --profile full

bench-quick:
	$(PY) -m bench.run --profile quick

# On a GPU machine: the backbones learn there, respect masks, and reload on a CPU.
gpu-check:
	$(PY) -m bench.gpu_check --out bench/results/gpu_check

clean:
	rm -rf $(RUNS) $(EXPORTS) .pytest_cache .ruff_cache
