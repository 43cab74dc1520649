# The two set-up commands of the README. Each creates .venv and installs what it needs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here (not in pyproject, which keeps a range for GPU users): this pair installs
# from the machine's local wheel cache; any other torch request downloads gigabytes.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: run test install

# jvp-flash-attention (flowzoo[gpu]'s fused JVP attention) is pinned and installed without dependencies, so it
# cannot move torch; torch brings triton. The tests run its Triton kernel on the CPU under Triton's interpreter.
JVP_FLASH_PIN := jvp-flash-attention==0.14.0

$(VENV)/.installed: pyproject.toml examples/flowzoo-splitmeanflow/pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps "$(JVP_FLASH_PIN)"  # tests/test_jvp_flash_interpreter.py
	$(PY) -m pip install -q -e examples/flowzoo-splitmeanflow  # the out-of-tree plugin example (issue 15)
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/flowzoo run --objective alphaflow --schedule sigmoid

test: $(VENV)/.installed
	$(PY) -m pytest tests
