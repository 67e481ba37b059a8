# The orchestrator service. Migrations run at start; PostgreSQL comes from DATABASE_URL.

# Stage 1: build the wheel. It carries the package, queries.sql and migrations/*.sql.
FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
# orchestrator/migrations is a symlink to ../migrations: both are copied, so it resolves.
COPY migrations ./migrations
COPY orchestrator ./orchestrator
RUN pip wheel --no-deps --wheel-dir /wheels .

# Stage 2: the wheel installed as a user would (not editable), without the sources.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8080

COPY --from=build /wheels /tmp/wheels
RUN pip install /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --create-home --home-dir /home/orchestrator orchestrator

WORKDIR /home/orchestrator
USER orchestrator
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"
CMD ["orchestrator", "serve"]
