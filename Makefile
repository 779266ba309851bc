# Two commands do everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
CONFIG ?= feeds.toml
# `make once FORCE=1` polls the sources backing off after errors too (`once --force`).
FORCE  ?=

.PHONY: install install-test postgres chromium nginx feedparser-corpus messages run once status test lint typecheck pytest bench bench-tools validate clean

install: $(STAMP)
install-test: $(TEST_STAMP)

# Re-install only when the project's metadata changes, so repeated runs are quick.
# `make run` needs the runtime set only; the test and lint tools come with `make test`.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(TEST_STAMP)

# The PostgreSQL server binaries for the store's PostgreSQL tests (tests/pgserver.py starts a
# throwaway server from them). Installed from Debian's packages when missing and we are root;
# where that is impossible this step says so and those tests skip with the reason, so it never
# fails the build by itself.
postgres:
	@if [ -x "$$AGGREGATOR_PG_BINDIR/initdb" ] || command -v initdb >/dev/null 2>&1 \
	    || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's postgresql package for the PostgreSQL store tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends postgresql >/dev/null; } \
	    || echo "make: could not install postgresql; the PostgreSQL tests will be skipped"; \
	else \
	    echo "make: no PostgreSQL server binaries, and not root with apt-get to install them;" \
	        "the PostgreSQL tests will be skipped"; \
	fi

# Chromium (and Noto fonts for Devanagari) for the page's screenshot tests in
# tests/test_page.py: installed from Debian's packages when missing and we are root, like
# PostgreSQL above; otherwise those tests skip, saying why. Never fails the build by itself.
chromium:
	@if [ -x /usr/bin/chromium ]; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's chromium and fonts-noto-core for the page screenshot tests"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends chromium fonts-noto-core >/dev/null; } \
	    || echo "make: could not install chromium; the page screenshot tests will be skipped"; \
	else \
	    echo "make: no /usr/bin/chromium, and not root with apt-get to install it;" \
	        "the page screenshot tests will be skipped"; \
	fi

# nginx for tests/test_nginx.py, which serves a publish through contrib/nginx.conf: from
# Debian's packages when missing and we are root, like the two above; otherwise that test
# skips, saying why.
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "make: installing Debian's nginx for the contrib/nginx.conf test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends nginx >/dev/null; } \
	    || echo "make: could not install nginx; the nginx test will be skipped"; \
	else \
	    echo "make: no nginx, and not root with apt-get to install it; the nginx test will be skipped"; \
	fi

# feedparser's own test corpus (~2,200 documents) for tests/test_partial_corpus.py: the
# partial parse must read each document, and each mutation of it, as a whole parse does.
# The source distribution of the installed feedparser on the package index carries it (pip
# fetches setuptools too, to read its metadata); it is unpacked inside the virtual environment
# (whole, or not at all; a corpus fetched before stays until a new one is complete), never into
# the repository. Where the index cannot be reached this step says so (two tries of 10 s at
# most for each download, setuptools' too: set in the environment, which the pip that
# fetches setuptools inherits) and those tests skip with the reason.
CORPUS := $(VENV)/feedparser-corpus
feedparser-corpus: install-test
	@version=$$($(BIN)/python -c 'import feedparser; print(feedparser.__version__)'); \
	here="$(CORPUS)/feedparser-$$version"; \
	if [ ! -d "$$here/tests/wellformed" ]; then \
	    echo "make: fetching feedparser $$version's source (its test corpus) from the package index"; \
	    mkdir -p "$(CORPUS)" && rm -rf "$(CORPUS)/fetching" && mkdir "$(CORPUS)/fetching" \
	    && PIP_TIMEOUT=10 PIP_RETRIES=1 $(BIN)/python -m pip download --quiet --no-deps \
	        --no-binary :all: --dest "$(CORPUS)/fetching" "feedparser==$$version" \
	    && tar --no-same-owner -xzf "$(CORPUS)/fetching/feedparser-$$version.tar.gz" \
	        -C "$(CORPUS)/fetching" \
	    && rm -rf "$$here" && mv "$(CORPUS)/fetching/feedparser-$$version" "$$here" \
	    || echo "make: could not fetch feedparser's source; the partial parse's corpus tests will be skipped"; \
	    rm -rf "$(CORPUS)/fetching"; \
	fi; \
	if [ -d "$$here/tests/wellformed" ]; then \
	    ln -sfn "feedparser-$$version" "$(CORPUS)/current"; \
	else \
	    rm -f "$(CORPUS)/current"; \
	fi

# The page's interface words: extract them from the template and aggregator/render/*.py
# (mappings in pyproject.toml) into the .pot, merge it into each language's .po, compile the
# .mo files that ship in the package. Run after changing a `_()` string; commit all three.
LOCALES := aggregator/render/locale
messages: install
	$(BIN)/pybabel extract -F pyproject.toml --add-location=file --no-wrap --sort-by-file \
	    --project=aggregator --copyright-holder="aggregator contributors" \
	    -o $(LOCALES)/messages.pot aggregator/render
	$(BIN)/pybabel update -i $(LOCALES)/messages.pot -d $(LOCALES) --no-wrap --ignore-pot-creation-date
	$(BIN)/pybabel compile -d $(LOCALES) --statistics

run: install
	$(BIN)/aggregator run --config $(CONFIG)

once: install
	$(BIN)/aggregator once --config $(CONFIG)$(if $(FORCE), --force)

status: install
	$(BIN)/aggregator status --config $(CONFIG)

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-test
	$(BIN)/mypy

# In parallel (pytest-xdist): one worker more than the cores (tests/conftest.py says why;
# PYTEST_XDIST_AUTO_NUM_WORKERS overrides), each test file on one worker, so a file's tests
# share its module fixtures and keep their order. The 15 slowest tests are listed at the end,
# so that a suite growing towards its ten minutes shows where.
pytest: install-test postgres chromium nginx feedparser-corpus
	FEEDPARSER="$${FEEDPARSER:-$(CURDIR)/$(CORPUS)/current}" $(BIN)/python -m pytest -q -n auto --dist loadfile --durations=15

test: lint typecheck pytest

# The load generator and the yardstick web server come from Debian's packages.
bench-tools:
	@command -v wrk >/dev/null && command -v nginx >/dev/null \
	  || { test "$$(id -u)" = 0 && apt-get install -y -qq wrk nginx >/dev/null; } \
	  || echo "bench: wrk and nginx are missing and cannot be installed; the serving benchmark will say so"

bench: install-test bench-tools
	$(BIN)/python -m bench --feeds 200,1000 --items 50
	$(BIN)/python -m bench idle --feeds 1000 --seconds 60
	$(BIN)/python -m bench publish --entries 100000
	$(BIN)/python -m bench serve

# Runs the W3C feed validator on the published feeds when a checkout of it is
# named by FEEDVALIDATOR (see README, "Validating the output").
validate: install-test
	$(BIN)/python -m pytest -q tests/test_w3c_validator.py -rs

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
