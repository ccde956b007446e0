# lrkeeper: the HTTP service, on SQLite under /data unless LRKEEPER_DATABASE_URL says otherwise.
#   docker build -t lrkeeper .
#   docker run -p 8000:8000 -v lrkeeper-data:/data -e LRKEEPER_TOKENS=read:...,write:... lrkeeper
#   docker run -p 8000:8000 -v lrkeeper-data:/data -e LRKEEPER_ALLOW_ANONYMOUS=true lrkeeper
# With neither, the service is in protected mode: it answers loopback clients only, and a
# client through -p comes from the Docker bridge (only health, metrics and docs answer it).
# Legacy-builder compatible on purpose (no BuildKit syntax), and any Debian-based
# Python >= 3.11 image works as BASE_IMAGE.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python3 -m venv /opt/venv
COPY . .
RUN /opt/venv/bin/pip install --no-cache-dir ".[server]"

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    LRKEEPER_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LRKEEPER_DATABASE_URL=sqlite:////data/lrkeeper.db
RUN useradd --system --user-group --uid 10001 --home-dir /app --no-create-home lrkeeper \
    && mkdir -p /data \
    && chown lrkeeper:lrkeeper /data
COPY --from=build /opt/venv /opt/venv
# `lrkeeper serve` migrates before serving; Alembic finds its configuration in the
# working directory's pyproject.toml ([tool.alembic]) and the migrations beside it.
WORKDIR /app
COPY pyproject.toml ./
COPY migrations ./migrations
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Exec form: the service is PID 1 and receives SIGTERM itself (exit code 0 on stop).
CMD ["lrkeeper", "serve", "--host", "0.0.0.0", "--port", "8000"]
