# Two entry points do all set-up on a fresh machine (Python + pip + the torch CPU wheel):
#   make demo   installs into .venv and runs a simulated federation on synthetic data
#   make test   installs into .venv and runs the test suite (what .ci/run calls)
# A coordinator machine also needs nginx (server/ops/proxy.py puts it on the public port):
#   make coordinator-setup   installs the Debian package when nginx is missing (root or sudo)
# The audit page test renders report.html in a headless Chromium (Debian's, driven by Selenium):
#   make browser-setup       installs chromium + chromium-driver when missing (root or sudo)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench privacy-utility coordinator-setup browser-setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedrec simulate --out runs/demo --overwrite

test: $(STAMP) coordinator-setup browser-setup
	$(BIN)/python -m pytest -q

test-slow: $(STAMP) coordinator-setup browser-setup
	$(BIN)/python -m pytest -q -m slow

NGINX_PACKAGES := nginx-light nginx
coordinator-setup:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then \
	  echo "nginx present: $$(PATH="$$PATH:/usr/sbin" nginx -v 2>&1)"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing nginx (the coordinator's public proxy) with apt-get"; \
	  $$SUDO apt-get update -qq || { echo "ERROR: apt-get update failed" >&2; exit 1; }; \
	  for pkg in $(NGINX_PACKAGES); do \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$pkg && break; \
	  done; \
	  PATH="$$PATH:/usr/sbin" nginx -v || { echo "ERROR: could not install nginx (tried:" \
	    "$(NGINX_PACKAGES)); fedrec coordinator start and the e2e tests need it" >&2; exit 1; }; \
	fi

BROWSER_PACKAGES := chromium chromium-driver
browser-setup:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then \
	  echo "chromium present: $$(chromium --version 2>/dev/null)"; \
	else \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "installing $(BROWSER_PACKAGES) (the audit page test) with apt-get"; \
	  $$SUDO apt-get update -qq || { echo "ERROR: apt-get update failed" >&2; exit 1; }; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(BROWSER_PACKAGES) \
	    || { echo "ERROR: could not install $(BROWSER_PACKAGES); the page tests need them" >&2; \
	         exit 1; }; \
	  chromium --version && command -v chromedriver; \
	fi

privacy-utility: $(STAMP)
	$(BIN)/fedrec experiment sweep simulations/experiments/privacy_utility.toml

bench: $(STAMP)
	$(BIN)/python benchmarks/simulation_overhead.py

clean:
	rm -rf $(VENV) runs .pytest_cache
