# The two set-up commands of the README. Each creates .venv and installs what it needs on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned here (not in pyproject, which keeps a range for GPU users): this pair installs
# from the machine's local wheel cache; any other torch request downloads gigabytes.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: run test install fashion-data

# jvp-flash-attention (flowzoo[gpu]'s fused JVP attention) is pinned and installed without dependencies, so it
# cannot move torch; torch brings triton. The tests run its Triton kernel on the CPU under Triton's interpreter.
JVP_FLASH_PIN := jvp-flash-attention==0.14.0

# torch's CUDA build takes about 5.5 GB in the venv: with less free, pip stops half-way with "[Errno 28] No space
# left on device" and a traceback, so say it first, in one sentence (skipped once torch is in the venv).
NEED_FREE_GB := 7

$(VENV)/.installed: pyproject.toml examples/flowzoo-splitmeanflow/pyproject.toml Makefile
	@if ! { test -x $(PY) && $(PY) -c "import torch" 2>/dev/null; }; then \
	  free_gb=$$(df -Pk . | awk 'NR == 2 {print int($$4 / 1048576)}'); \
	  if [ "$$free_gb" -lt $(NEED_FREE_GB) ]; then \
	    echo "Installing needs about $(NEED_FREE_GB) GB free here (torch's CUDA build is 5.5 GB in $(VENV)); $$free_gb GB is free on this disk."; \
	    exit 1; \
	  fi; \
	fi
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

# Fashion-MNIST's four IDX files for `--data fashion_mnist` (flowzoo never downloads at run time): Debian's and
# Ubuntu's package dataset-fashion-mnist puts them in /usr/share/datasets/fashion-mnist, the data's default root.
# Without apt (or without that package in its archive), say where the files come from instead.
FASHION_HINT := get the four files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, \
t10k-labels-idx1-ubyte.gz) from github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder and pass it \
as --set data.path=FOLDER

fashion-data:
	@if command -v dpkg >/dev/null 2>&1 && dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  echo "Fashion-MNIST is installed (dataset-fashion-mnist: /usr/share/datasets/fashion-mnist)."; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$sudo apt-get install -y dataset-fashion-mnist \
	    || { $$sudo apt-get update -qq && $$sudo apt-get install -y dataset-fashion-mnist; } \
	    || { echo "apt could not install dataset-fashion-mnist; $(FASHION_HINT)."; exit 1; }; \
	else \
	  echo "No apt here: $(FASHION_HINT)."; exit 1; \
	fi
