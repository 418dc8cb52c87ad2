# Filecast developer commands. `make demo` and `make test` install what they need first.
PYTHON ?= python3
VENV ?= .venv
TOOLS ?= $(CURDIR)/.tools
AZURITE_VERSION ?= 3.37.0
PY := $(VENV)/bin/python
export FILECAST_TOOLS := $(TOOLS)
# Debian packages the integration tests use (FTP, SFTP, PostgreSQL servers, GnuPG, a browser).
DEBIAN_PACKAGES := vsftpd postgresql openssh-server openssh-client gnupg chromium chromium-driver curl

.PHONY: setup system-packages demo test test-unit lint deploy-check clean bench

setup: $(VENV)/.installed $(TOOLS)/node_modules/.bin/azurite

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(TOOLS)/node_modules/.bin/azurite:
	mkdir -p $(TOOLS)
	npm install --prefix $(TOOLS) --no-save --no-package-lock --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

# As root (CI, a fresh container), installs the servers the integration tests start; otherwise it
# says what is missing, and the tests that need it are skipped with a summary at the end.
system-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages for the integration tests:" $$missing; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "NOTE: the integration tests need these Debian packages, which are missing:" $$missing; \
	  echo "      install them with: sudo make system-packages   (their tests are skipped until then)"; \
	fi

demo: setup
	$(PY) scripts/demo.py

test: setup system-packages
	$(PY) -m pytest

# The unit tier alone, in under a minute: property tests try a fifth of their examples (tests/helpers.py).
test-unit: setup
	FILECAST_QUICK_TESTS=1 $(PY) -m pytest tests/unit -q

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# Filecast, dlt (its own venv under .bench/, made on first use) and the limit, side by side (README "Benchmarks").
bench: setup
	$(PY) -m bench $(BENCH_ARGS)

deploy-check: setup
	$(PY) devtools/deployed.py

clean:
	rm -rf $(VENV) $(TOOLS) .demo
