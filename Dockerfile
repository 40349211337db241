# Build a wheel in one stage; install it without build tools in a slim final stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY jitcore ./jitcore
COPY bot ./bot
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/jit --create-home jit
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER jit
WORKDIR /var/lib/jit
ENV JIT_CONFIG=/etc/jit/jit.yaml \
    JIT_DATABASE_URL=sqlite:////var/lib/jit/jit.db \
    PYTHONUNBUFFERED=1
# Release step before starting new code on PostgreSQL: `jit db upgrade`.
ENTRYPOINT ["jit-bot"]
