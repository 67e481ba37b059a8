# The orchestrator service. Migrations run at start; PostgreSQL comes from DATABASE_URL.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8080

WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY migrations ./migrations
# Editable, so the migration runner finds /app/migrations next to the package.
RUN pip install -e . \
    && useradd --system --uid 10001 --home-dir /app orchestrator

USER orchestrator
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status != 200)"
CMD ["orchestrator", "serve"]
