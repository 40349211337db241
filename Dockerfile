# syntax=docker/dockerfile:1
#
# jit-bot: the Slack bot and the expiry engine in one process, serving HTTP on JIT_HTTP_PORT.
#
#   docker build -t jit .
#   docker run -d --name jit-bot -p 3000:3000 \
#       -e SLACK_BOT_TOKEN -e SLACK_SIGNING_SECRET \
#       -v "$PWD/jit.yaml:/etc/jit/jit.yaml:ro" -v jit-data:/var/lib/jit jit
#
# Cloud credentials come the usual way for each SDK (an instance or workload identity, or
# AWS_* / AZURE_* variables). jit-bot stops cleanly on SIGTERM (what `docker stop` sends).
#
# Database: with the default SQLite file under /var/lib/jit (mount a volume there) jit-bot
# migrates the file itself at start; run one replica only. On PostgreSQL (set
# JIT_DATABASE_URL=postgresql+psycopg://...) the schema migration is a release step:
# `jit db upgrade`, run once per release with the same image before the new jit-bot starts:
#
#   docker run --rm -e JIT_DATABASE_URL --entrypoint jit IMAGE db upgrade
#
# tests/e2e/test_container_image.py replays this file's build, install and start steps
# without a container engine: keep the two in step.

# ---- build: the project wheel, and a wheel for every dependency --------------------------
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jitcore ./jitcore
COPY bot ./bot
# All of jit's dependencies publish wheels for linux, so this stage needs no compiler either;
# should one ever need building from source, its build tools go in this stage, never the final.
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/jit-*.whl

# ---- final: the wheels installed offline; no build tools, no wheels left in a layer -------
FROM python:3.11-slim
# The service account: a fixed uid/gid (for volume ownership and runAsNonRoot), no login
# shell, its home the data directory.
RUN groupadd --system --gid 10001 jit \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/jit \
        --shell /usr/sbin/nologin jit \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/jit \
 && install -d -m 0755 /etc/jit
# The wheels are bind-mounted from the build stage for this one step (BuildKit), so they never
# become a layer of the image; --no-index: everything comes from them, nothing is fetched.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --root-user-action=ignore --find-links /wheels jit

ENV JIT_CONFIG=/etc/jit/jit.yaml \
    JIT_DATABASE_URL=sqlite:////var/lib/jit/jit.db \
    JIT_HTTP_PORT=3000 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 10001:10001
WORKDIR /var/lib/jit
EXPOSE 3000

# Liveness: GET /healthz answers 200 while the process is alive. The port is read from the
# environment at check time, so `-e JIT_HTTP_PORT=...` needs no change here; no curl in the
# image, python's urllib does the request and any failure (refused, timeout, non-2xx) exits 1.
# Readiness (database reachable, engine running) is GET /readyz: point a load balancer or a
# Kubernetes readinessProbe at it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('JIT_HTTP_PORT') or '3000') + '/healthz', timeout=4).close()"]

ENTRYPOINT ["jit-bot"]
