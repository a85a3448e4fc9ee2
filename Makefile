# maint-agent: `make run` starts the agent in the foreground with ./agent.yaml,
# `make test` installs what the tests need and runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the suite mostly waits on real servers: three workers on two cores halve its wall time
TEST_WORKERS ?= 3

# `make install`: the agent in its own venv under PREFIX, the systemd unit, its system user, the polkit rule,
# the docs the config refers to (share/doc: config reference, example profile, deploy guide) and (only when
# absent) /etc/maint-agent/agent.yaml. DESTDIR stages everything under another root. The venv is built on the
# system interpreter, whatever python runs make: its pyvenv.cfg then says `home = /usr/bin`, true on every
# Debian host with the same Python, so a staged tree runs wherever it is copied.
SYSTEM_PYTHON ?= /usr/bin/python3
PREFIX  ?= /opt/maint-agent
DESTDIR ?=
UNITDIR ?= /etc/systemd/system
EXTRAS  ?= all
UNITS   ?=
PURGE   ?=
ROOT    := $(DESTDIR)
VENVDIR := $(ROOT)$(PREFIX)
DOCDIR  := $(VENVDIR)/share/doc/maint-agent
ETC     := $(ROOT)/etc/maint-agent
POLKIT  := $(ROOT)/usr/share/polkit-1/rules.d/50-maint-agent.rules

.PHONY: run test test-deps check bench bench-scale clean install install-venv install-files uninstall report-preview \
	status-screenshot

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(STAMP)
	mkdir -p var
	$(BIN)/maint-agent run --config agent.yaml

test-deps: $(STAMP)
	@./tests/install-deps.sh

test: test-deps
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

check: $(STAMP)
	$(BIN)/maint-agent config check agent.yaml

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

# 30 to 1,000 checks with Monit beside the agent (~5 min); SOAK=600 adds the 10-minute RSS figure
bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py $(if $(SOAK),--soak $(SOAK))

# a sample weekly report of the example profile from a seeded demo store: docs/report-sample.txt and a
# screenshot of its HTML by headless Chromium, docs/report-sample.png (as root Chromium needs --no-sandbox)
report-preview: $(STAMP)
	$(BIN)/python docs/report_preview.py --html var/report-preview/report.html --text docs/report-sample.txt
	chromium --headless --disable-gpu --hide-scrollbars $(if $(filter 0,$(shell id -u)),--no-sandbox) \
		--screenshot=docs/report-sample.png --window-size=1000,1600 file://$(CURDIR)/var/report-preview/report.html

# the status page of a running agent on a seeded demo store, screenshotted by headless Chromium:
# docs/status-page.png (overview) and docs/status-check.png (one check); the code path of the browser test
status-screenshot: $(STAMP)
	$(BIN)/python docs/status_preview.py --png docs/status-page.png --check-png docs/status-check.png

clean:
	rm -rf $(VENV) var .pytest_cache

install: install-venv install-files
	@echo
	@echo "Installed. Edit $(ETC)/agent.yaml (then: $(PREFIX)/bin/maint-agent config check --strict), and start it:"
	@echo "  systemd-sysusers && systemctl daemon-reload && systemctl enable --now maint-agent"

install-venv:
	$(SYSTEM_PYTHON) -m venv --clear $(VENVDIR)
	$(VENVDIR)/bin/pip install --quiet --no-cache-dir '.$(if $(EXTRAS),[$(EXTRAS)])'
	@# a staged venv (DESTDIR) must still run from PREFIX once copied to the real root
	$(if $(DESTDIR),grep -rlI '$(VENVDIR)' $(VENVDIR)/bin $(VENVDIR)/pyvenv.cfg | xargs sed -i 's|$(VENVDIR)|$(PREFIX)|g')
	rm -rf build

install-files:
	install -d -m 0755 $(DOCDIR)/dropins $(DOCDIR)/examples
	install -m 0644 docs/deploy.md docs/config-reference.md systemd/web-config.example.yml \
		systemd/sudoers.maint-agent $(DOCDIR)/
	install -m 0644 systemd/dropins/*.conf $(DOCDIR)/dropins/
	install -m 0644 examples/ai-camera.yaml $(DOCDIR)/examples/
	install -d -m 0755 $(ROOT)$(UNITDIR) $(ROOT)/usr/lib/sysusers.d $(ROOT)/usr/share/polkit-1/rules.d
	sed 's|/opt/maint-agent/|$(PREFIX)/|g' systemd/maint-agent.service > $(ROOT)$(UNITDIR)/maint-agent.service
	chmod 0644 $(ROOT)$(UNITDIR)/maint-agent.service
	install -m 0644 systemd/maint-agent.sysusers.conf $(ROOT)/usr/lib/sysusers.d/maint-agent.conf
	@# the polkit rule lists the units the agent may restart: from UNITS=, else an existing rule is kept
	@if [ -z '$(UNITS)' ] && [ -e $(POLKIT) ]; then echo "kept the existing $(POLKIT) (UNITS= replaces it)"; \
	else sed 's|/\* @UNITS@ \*/|$(foreach u,$(UNITS),"$(u)",)|; s|,\]|]|' systemd/polkit/50-maint-agent.rules \
		> $(POLKIT) && chmod 0644 $(POLKIT); fi
	install -d -m 0755 $(ROOT)/usr/local/bin
	ln -sfn $(PREFIX)/bin/maint-agent $(ROOT)/usr/local/bin/maint-agent
	install -d -m 0755 $(ETC)
	install -d -m 0700 $(ETC)/credentials
	install -d -m 0750 $(ETC)/conf.d
	@if [ -e $(ETC)/agent.yaml ]; then echo "kept the existing $(ETC)/agent.yaml"; \
	else (umask 027 && sed 's|/opt/maint-agent/|$(PREFIX)/|g' systemd/agent.example.yaml > $(ETC)/agent.yaml) && \
		chmod 0640 $(ETC)/agent.yaml; fi
	@if [ -z '$(DESTDIR)' ]; then systemd-sysusers /usr/lib/sysusers.d/maint-agent.conf && \
		chgrp maint-agent $(ETC)/agent.yaml $(ETC)/conf.d; fi

uninstall:
	@if [ -z '$(DESTDIR)' ] && command -v systemctl >/dev/null; then \
		systemctl disable --now maint-agent.service 2>/dev/null || true; fi
	rm -f $(ROOT)$(UNITDIR)/maint-agent.service $(ROOT)/usr/lib/sysusers.d/maint-agent.conf $(POLKIT) \
		$(ROOT)/usr/local/bin/maint-agent
	rm -rf $(VENVDIR)
	$(if $(PURGE),rm -rf $(ETC) $(ROOT)/var/lib/maint-agent,@echo "kept $(ETC) and $(ROOT)/var/lib/maint-agent (PURGE=1 removes them)")
	@if [ -z '$(DESTDIR)' ] && command -v systemctl >/dev/null; then systemctl daemon-reload 2>/dev/null || true; fi
