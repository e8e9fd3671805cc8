# Two commands do all set-up: `make demo` (whole pipeline on the bundled sample) and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# llama-cpp-python compiles llama.cpp: the library only (no tools, tests, examples or multimodal lib), with the
# CPU's own instructions; pip caches the wheel, so only the first set-up pays (~4 min on 2 cores).
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
export CMAKE_BUILD_PARALLEL_LEVEL ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: demo test bench venv clean
# Debian packages the tests use, installed here with apt as root or through passwordless sudo (otherwise the
# tests that need them are skipped): chromium for the web chat's test (Playwright cannot download its own browser
# offline), espeak-ng for the multimodal experiment's speech.
CHROMIUM := /usr/bin/chromium
ESPEAK := /usr/bin/espeak-ng
APT_INSTALL = DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(1)
define apt
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && $(call APT_INSTALL,$(1)) >/dev/null; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo $(call APT_INSTALL,$(1)) >/dev/null; \
	else echo "make: no root to install $(1) (apt-get install $(1)): the tests that need it will be skipped"; fi
endef

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m qazlm.gguf.converter --install  # llama.cpp's convert_hf_to_gguf.py from the same release
	@rm -f $(VENV)/.installed-*; touch $@

venv: $(STAMP)

$(CHROMIUM):
	$(call apt,chromium chromium-driver)

$(ESPEAK):
	$(call apt,espeak-ng)

demo: $(STAMP)
	$(BIN)/qazlm run recipes/tiny.toml

test: $(STAMP) $(CHROMIUM) $(ESPEAK)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs out
