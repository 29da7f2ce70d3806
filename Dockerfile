# syntax=docker/dockerfile:1
#
# jobd in a container (docs/deployment.md#docker):
#
#   docker build -t jobd .
#   docker run -d --name jobd --stop-timeout 90 -v jobd-state:/var/lib/jobd jobd
#
# docker-compose.yml runs it on PostgreSQL, with the schema migrated first and the HTTP shim.
#
# The image keeps jobd's systemd layout: STATE_DIRECTORY=/var/lib/jobd (the SQLite database
# when no database.url is set) and RUNTIME_DIRECTORY=/run/jobd (the control socket,
# /run/jobd/jobd.sock), so `jobctl` inside the container finds the daemon with no option.

ARG PYTHON_VERSION=3.11

# --- build: wheels of jobd and of everything it needs -----------------------------------------
FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
# What the wheel is built from (pyproject.toml includes migrations/ and docs/openapi.yaml).
COPY pyproject.toml README.md ./
COPY jobd/ jobd/
COPY jobctl/ jobctl/
COPY migrations/ migrations/
COPY docs/openapi.yaml docs/openapi.yaml
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime: a slim image with jobd in a virtualenv, run by an unprivileged user -------------
FROM python:${PYTHON_VERSION}-slim
# tini as PID 1: it passes SIGTERM on to jobd and reaps any orphaned process.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 jobd \
    && useradd --system --uid 10001 --gid jobd --home-dir /var/lib/jobd \
        --shell /usr/sbin/nologin jobd \
    && install -d -o jobd -g jobd -m 0750 /var/lib/jobd /run/jobd
# Installed from the build stage's wheels only: no compiler, no network, no wheel left behind.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/jobd \
    && /opt/jobd/bin/pip install --no-cache-dir --no-index --find-links=/wheels jobd
ENV PATH=/opt/jobd/bin:$PATH \
    STATE_DIRECTORY=/var/lib/jobd \
    RUNTIME_DIRECTORY=/run/jobd

USER jobd
WORKDIR /var/lib/jobd
# The SQLite database (unused on PostgreSQL) and the control socket, which another container
# (the HTTP shim, a sidecar running jobctl) reaches by mounting the same volume.
VOLUME ["/var/lib/jobd", "/run/jobd"]
# The HTTP shim's port, for `jobd http --listen 0.0.0.0:8080`.
EXPOSE 8080

# SIGTERM drains: running jobs get shutdown.drain_timeout (30 s) to finish, then are stopped
# and given back.  Give the container longer than that to stop: `docker stop -t 90`,
# `docker run --stop-timeout 90`, compose's stop_grace_period.
STOPSIGNAL SIGTERM
# Healthy: the daemon answers on its socket, its store answers, its workers are up, and it is
# not draining (`jobctl health` exits 1 when degraded, 3 when the daemon cannot be reached).
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["jobctl", "health"]
ENTRYPOINT ["tini", "--"]
CMD ["jobd", "run"]
