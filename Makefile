# Hoist: `make demo` and `make test` set up everything on a fresh Debian machine (as root) and run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PLUGINS := content_local resolver_docker runtime_builtin execution
DEBIAN_PACKAGES := docker-registry skopeo containerd runc busybox-static curl openssl apache2-utils \
	golang-github-containerd-containerd-dev python3-venv python3-dev gcc time iproute2 util-linux umoci
# One line installs core and every plugin editable (the packaging test checks it lists them all).
INSTALL_EDITABLE := -e '.[test]' $(foreach p,$(PLUGINS),-e plugins/$(p))

.PHONY: setup deps venv demo test bench clean docs proto

setup: deps venv

deps: .deps.stamp
.deps.stamp:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml $(foreach p,$(PLUGINS),plugins/$(p)/pyproject.toml) | deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
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
