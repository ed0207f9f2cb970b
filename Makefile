# Hoist: `make demo` and `make test` set up everything on a fresh Debian machine (as root) and run.
SHELL := /bin/bash
# Debian's own interpreter: the one python3-venv and python3-dev (below) are for, kept up to date by
# the distribution, and built with profile-guided and link-time optimisation (a build without them,
# such as a plain pyenv one earlier on PATH, runs Hoist's Python code about 15 % slower).
# `make PYTHON=python3.12 setup` picks another; the venv is made again when the interpreter changes.
PYTHON ?= /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
PLUGINS := content_local resolver_docker runtime_builtin execution
DEBIAN_PACKAGES := docker-registry skopeo containerd runc busybox-static curl openssl apache2-utils \
	golang-github-containerd-containerd-dev python3-venv python3-dev gcc time iproute2 util-linux umoci
# One line installs core and every plugin editable (the packaging test checks it lists them all).
INSTALL_EDITABLE := -e '.[test]' $(foreach p,$(PLUGINS),-e plugins/$(p))

.PHONY: setup deps venv venv-interpreter demo test bench clean docs proto

setup: deps venv

deps: .deps.stamp
.deps.stamp:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# A venv made by another interpreter than $(PYTHON) is removed first (its path is kept in .venv/.python);
# the install step then runs in a second make, which sees it gone.
venv: venv-interpreter
	@$(MAKE) --no-print-directory $(VENV)/.installed
venv-interpreter: | deps
	@want=$$(readlink -f "$$(command -v $(PYTHON))"); \
	if [ -d $(VENV) ] && [ "$$(cat $(VENV)/.python 2>/dev/null)" != "$$want" ]; then \
		echo "$(VENV) was made by another interpreter; making it again with $$want"; rm -rf $(VENV); fi
$(VENV)/.installed: pyproject.toml $(foreach p,$(PLUGINS),plugins/$(p)/pyproject.toml) | deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	readlink -f "$$(command -v $(PYTHON))" > $(VENV)/.python
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(INSTALL_EDITABLE)
	@touch $@

demo: setup
	$(VENV)/bin/python examples/demo.py

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# Regenerate the reference pages from the code (tests/test_reference_docs.py catches drift).
docs: setup
	$(PY) -m hoist.docsgen config > docs/reference/config.md
	$(PY) -m hoist.docsgen cli > docs/reference/cli.md

bench: setup
	$(PY) benchmarks/run.py

# Regenerate hoist.api's *_pb2.py/*_pb2_grpc.py from core/hoist/api/**/*.proto (tests/api/test_generate.py catches drift).
proto: setup
	$(PY) -m hoist.api.generate

clean:
	rm -rf $(VENV) .deps.stamp build *.egg-info core/*.egg-info plugins/*/*.egg-info
