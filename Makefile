# audiokit: `make demo` and `make test` work from a clean clone; each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.audiokit-installed
# The CPU build of torch, from PyTorch's CPU index (PyPI's default build brings several GB of CUDA
# libraries; the +cpu wheel sorts above it). Where that index cannot be reached (an offline mirror with
# the wheel on disk) it is passed over at once. `make TORCH_INDEX= ...` takes PyPI's CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# command:Debian-package pairs audiokit runs (the Opus baseline; ffmpeg reads m4a, webm, ...)
SYSTEM_TOOLS := opusenc:opus-tools opusdec:opus-tools ffmpeg:ffmpeg ffprobe:ffmpeg
# and the tests also need: chromium + chromedriver, firefox-esr + pulseaudio (its null audio output): the
# server's web page is tested in headless Chromium and Firefox. Installed without recommends: pulseaudio's
# would bring systemd-logind, rtkit and a D-Bus user session, none of which the tests use
TEST_TOOLS := chromium:chromium chromedriver:chromium-driver firefox-esr:firefox-esr pulseaudio:pulseaudio

# speed/quality benchmarks run by `make bench` (each prints JSON and saves it under benchmarks/results/)
BENCHMARKS := benchmarks/bench_codec.py benchmarks/bench_enhancer.py benchmarks/bench_bwe.py benchmarks/frontends_speed.py benchmarks/frontends_chirp.py

.PHONY: setup system-tools test-tools test test-all demo bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -qq --retries 0 $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@# the C++ kernels (kernels/cpu) once per machine, so that the first entropy-coded decode does not wait
	@$(PY) -c "from audiokit.ops import cpp; m = cpp.load(); print('C++ kernels:', 'built' if m else f'not built ({cpp.unavailable_reason()}); numpy/torch run instead')"
	@touch $(STAMP)

# the Debian packages of TOOLS (command:package pairs) whose commands are missing: installed as root, else
# the apt-get line to run
define install_tools
	@missing=$$(for pair in $(1); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || echo $${pair##*:}; done | sort -u | xargs); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing system tools: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "audiokit needs these system packages: $$missing"; \
	    echo "install them with: sudo apt-get install $$missing"; exit 1; \
	  fi; \
	fi
endef

system-tools:
	$(call install_tools,$(SYSTEM_TOOLS))

test-tools:
	$(call install_tools,$(TEST_TOOLS))

setup: $(STAMP) system-tools

# pytest processes (pytest-xdist), one torch thread each (tests/conftest.py); a test file stays in one
# process, so that its module fixtures are built once. 2 workers on CI's 2 cores: 19 -> ~10 minutes.
TEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: setup test-tools
	$(PYTEST) -m "not slow"

test-all: setup test-tools
	$(PYTEST)

# the codec `make demo` runs: the shipped weights, or any other (make demo DEMO_MODEL=runs/<name>)
DEMO_MODEL ?= speech-16k

demo: setup
	$(VENV)/bin/audiokit demo --model $(DEMO_MODEL) --out demo-out -f

bench: setup
	@# encodec without its dependencies (they would pull a torchaudio that breaks beside torch 2.13), but
	@# with einops, which it imports
	$(PY) -m pip install -q --no-deps "encodec>=0.1.1" einops
	@for script in $(BENCHMARKS); do echo "== $$script"; $(PY) $$script --json || exit 1; done
	@# the server under load, short form (the full one: --streams 64 --seconds 60)
	$(PY) benchmarks/server_load.py --streams 16 --seconds 10
	@# the server soak: 1,000 normal, dropped, junk and early-leaving clients (about 15 s); fails on a wrong
	@# close code, a crash, counts that do not add up or RSS growing over 150 KiB per 100 cycles
	$(PY) benchmarks/server_soak.py --cycles 1000 --max-growth-kib 150 --out benchmarks/results/server_soak.json

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-*.png demo-out
