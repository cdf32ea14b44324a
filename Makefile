PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Every install resolves to the versions the suite last passed with; `make lock` refreshes them on purpose.
LOCK := requirements/lock.txt
NIIVUE := src/cspine/viewer/static/niivue.umd.js
EXTRAS := test,bench
PYTEST_ARGS ?= -n 2 --durations=15

# Programs the tests drive as real peers: dcmtk (dsrdump reads our SR; storescu/storescp talk to the DICOM
# node), Orthanc (a PACS that sends studies to the node and stores its results), chromium (the viewer's
# browser test, driven by Playwright; never `playwright install`), npm (the viewer bundle). Installed with apt
# where missing and possible (Orthanc's binary lives in /usr/sbin).
SYSTEM_PROGRAMS := dsrdump storescu chromium npm /usr/sbin/Orthanc
SYSTEM_PACKAGES := dcmtk chromium npm orthanc

.PHONY: install test demo lint bench lock clean system-deps viewer-assets

install: $(STAMP) system-deps $(NIIVUE)

system-deps:
	@missing=""; for p in $(SYSTEM_PROGRAMS); do command -v $$p >/dev/null || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing with apt"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) >/dev/null; \
	  else echo "warning: missing$$missing (apt-get install $(SYSTEM_PACKAGES)); their tests fail in CI"; fi; \
	fi

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet "pip>=24"
	$(PY) -m pip install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/cspine demo

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/decode.py
	$(PY) bench/synth.py

# Re-resolve the newest allowed versions in a scratch venv and write them to the lock file.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --upgrade --quiet "pip>=24"
	.lock-venv/bin/python -m pip install --quiet -e '.[$(EXTRAS),lite12]'
	mkdir -p requirements
	( echo "# cspine lock: the versions \`make install\` and CI use (refresh with \`make lock\`)."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable ) > $(LOCK)
	rm -rf .lock-venv

# The viewer's NiiVue bundle (2.5 MB) is generated, not tracked: npm installs the version pinned in
# viewer/package-lock.json and the bundle is copied into the package, which serves it (never a CDN).
$(NIIVUE): viewer/package-lock.json
	cd viewer && npm ci --no-audit --no-fund --silent
	cp viewer/node_modules/@niivue/niivue/dist/niivue.umd.js $(NIIVUE)

viewer-assets:
	rm -f $(NIIVUE) && $(MAKE) $(NIIVUE)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
