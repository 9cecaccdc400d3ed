# Two entry points for a fresh Debian machine (see README.md):
#   make run    install what the node needs, then run the node with its mount on ~/kachery-storage
#   make test   install what the tests need, then run the whole test suite
# Everything else here is a step of those two.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := fuse3 libfuse3-dev pkg-config attr gcc python3-dev python3-venv systemd
TEST_APT_PACKAGES := chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps test-deps venv lint bench clean

# Install the Debian packages named in $(1) that are missing.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
endef

# System packages: FUSE 3 (and its headers, pyfuse3 compiles against them), getfattr, systemd-analyze.
deps:
	$(call apt_install,$(APT_PACKAGES))

# For the tests only: headless chromium and its driver (the status page's browser test).
test-deps:
	$(call apt_install,$(TEST_APT_PACKAGES))

$(VENV)/.installed: pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)     # an existing venv keeps its Python; pip updates it
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

run: venv
	$(VENV)/bin/kacheryfs run

test: venv test-deps
	$(VENV)/bin/ruff check kachery_client kacheryfs tests bench
	$(VENV)/bin/mypy kachery_client kacheryfs
	$(PY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check kachery_client kacheryfs tests bench
	$(VENV)/bin/mypy kachery_client kacheryfs

bench: venv
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
