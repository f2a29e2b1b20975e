# Two entry points: `make demo` (the main job, local backend) and `make test`.
# Both build .venv from nothing; no preinstalled packages are assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv tools test lint unit demo bench clean image

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: its CPU build lies on local disk; an unpinned torch would pull a CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[predictor,kubernetes,tracing,test,sweep-cluster]'
	touch $(STAMP)

venv: $(STAMP)

# Tools from Debian, as tool:package (tests/e2e/test_conservation.py counts with hey, benchmarks use
# wrk, tests/component/test_manifests.py renders manifests/ with `kubectl kustomize`,
# tests/e2e/test_kube_failover.py puts nginx in front as the ingress, tests/e2e/test_prometheus_dashboard.py
# and `make demo` run Prometheus):
# installed only when missing and possible (root with apt-get); otherwise their tests skip, saying so.
TOOLS ?= hey:hey wrk:wrk kubectl:kubernetes-client nginx:nginx prometheus:prometheus
tools:
	@for spec in $(TOOLS); do \
	  tool=$${spec%%:*}; pkg=$${spec#*:}; \
	  command -v $$tool >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q $$pkg >/dev/null 2>&1 \
	      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$pkg >/dev/null 2>&1; } \
	      || echo "make tools: apt-get could not install $$pkg ($$tool); its tests are skipped"; \
	  else echo "make tools: $$tool missing and not installable here (needs root and apt-get)"; fi; \
	done; true

# The two images (images/: the slim kpa image, the predictor with CPU torch and zentorch), tagged with
# the project's version, built by buildah (root; Debian's buildah) from python:3.11-slim, or from a
# debootstrapped Debian bookworm base where no registry is reachable. See docs/kubernetes.md, "Images".
IMAGE_TAG := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

image:
	sh images/build.sh $(IMAGE_TAG)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Two workers, each running whole test files (a file's fixtures and its servers stay in one process):
# the suite is mostly waiting on real processes and sockets, so it takes half the time on 2 cores.
test: $(STAMP) tools
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2 --dist loadfile

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

demo: $(STAMP)
	@$(MAKE) --no-print-directory tools TOOLS=prometheus:prometheus
	$(PY) -m kpa demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
