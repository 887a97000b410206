# sessions_admin — everyday commands. Needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
HOST ?= 127.0.0.1
# The API keys `make run` and `make dev` generate on first use and serve with.
CLIENT_KEY_FILE ?= .client-key
ADMIN_KEY_FILE ?= .admin-key

export PORT HOST

.PHONY: help install install-dev run dev migrate test lint seed seed-count superuser clean

help:
	@echo "make run            set up and serve on http://$(HOST):$(PORT) (gunicorn, SQLite by default; API keys in $(CLIENT_KEY_FILE), $(ADMIN_KEY_FILE))"
	@echo "make dev            Django's development server with DJANGO_DEBUG=true"
	@echo "make test           set up and run the whole test suite (PYTEST_ARGS=... to select)"
	@echo "make lint           ruff"
	@echo "make install        create .venv and install the runtime requirements"
	@echo "make install-dev    the same with the test and lint tools"
	@echo "make migrate        apply the database migrations"
	@echo "make seed COUNT=N   insert N demo sessions (default 10000, at most 10000000)"
	@echo "make superuser      create an admin user (interactive)"
	@echo "make clean          remove .venv, static files, caches and test artifacts (keeps db.sqlite3 and the keys)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

install: $(VENV)/.runtime
install-dev: $(VENV)/.dev

# A per-checkout secret so `make run` works with no configuration; set
# DJANGO_SECRET_KEY in the environment to use your own.
.secret-key: | $(BIN)/python
	$(BIN)/python -c "import secrets; print(secrets.token_urlsafe(50))" > $@
	chmod 600 $@

# Per-checkout API keys, so that `make run` never leaves the client routes open:
# the client key for clients, the admin key for every route. Read through the
# *_FILE variables unless SESSIONS_API_KEY / SESSIONS_ADMIN_API_KEY are set.
$(CLIENT_KEY_FILE) $(ADMIN_KEY_FILE): | $(BIN)/python
	umask 077; $(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $@

KEY_FILES = SESSIONS_API_KEY_FILE="$${SESSIONS_API_KEY_FILE:-$(abspath $(CLIENT_KEY_FILE))}" \
	SESSIONS_ADMIN_API_KEY_FILE="$${SESSIONS_ADMIN_API_KEY_FILE:-$(abspath $(ADMIN_KEY_FILE))}"

migrate: install .secret-key
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat .secret-key)}" $(BIN)/python manage.py migrate --noinput

# gunicorn reads WEB_CONCURRENCY itself before its configuration file and fails
# with a traceback on a value that is not a number: the configuration file is
# run first to check the server's variables (one line naming a bad one), and an
# empty or blank WEB_CONCURRENCY is dropped so that it means the default, as everywhere.
run: migrate $(CLIENT_KEY_FILE) $(ADMIN_KEY_FILE)
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat .secret-key)}" $(BIN)/python manage.py collectstatic --noinput --verbosity 0
	@$(BIN)/python gunicorn.conf.py
	@$(KEY_FILES) $(BIN)/python -m messaging_project.api_keys
	case "$${WEB_CONCURRENCY:-}" in *[![:space:]]*) ;; *) unset WEB_CONCURRENCY ;; esac; \
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat .secret-key)}" $(KEY_FILES) exec $(BIN)/gunicorn messaging_project.asgi:application --config gunicorn.conf.py

dev: install $(CLIENT_KEY_FILE) $(ADMIN_KEY_FILE)
	DJANGO_DEBUG=true $(BIN)/python manage.py migrate --noinput
	@$(KEY_FILES) $(BIN)/python -m messaging_project.api_keys
	DJANGO_DEBUG=true $(KEY_FILES) $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: install-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install-dev
	$(BIN)/ruff check .

# Checked before migrate installs anything; COUNT reaches the shell through
# the environment and stays one quoted word, so it can never add options.
seed-count:
	@case "$${COUNT:-10000}" in ''|*[!0-9]*) echo "make seed: COUNT must be a whole number, not '$$COUNT'." >&2; exit 2;; esac

seed: seed-count migrate
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat .secret-key)}" $(BIN)/python manage.py seed_sessions --count "$${COUNT:-10000}"

superuser: migrate
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$(cat .secret-key)}" $(BIN)/python manage.py createsuperuser

clean:
	rm -rf $(VENV) staticfiles .pytest_cache .hypothesis .ruff_cache test-artifacts
