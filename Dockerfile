# migrate: SQLite -> PostgreSQL, as a one-shot job.
# Build: docker build -t migrate:local .   (PYTHON_IMAGE picks the base, e.g. a pinned digest)
ARG PYTHON_IMAGE=python:3.12-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /build
COPY requirements-runtime.txt .
# wheels only: no compiler is needed (or present) in either stage
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r requirements-runtime.txt

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="migrate" \
      org.opencontainers.image.description="Lossless SQLite to PostgreSQL migration job: backup, restore, verify" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://example.invalid/migrate"
RUN groupadd --system --gid 10001 migrate \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin migrate \
    && mkdir -p /backup /data /secrets \
    && chown 10001:10001 /backup /data /secrets
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY migrate/ ./migrate/
COPY examples/ ./examples/
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MIGRATE_SOURCE=/app/examples/app/sample.db \
    MIGRATE_BACKUP_DIR=/backup
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]
CMD ["run"]
