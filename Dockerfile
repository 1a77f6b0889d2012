# syntax=docker/dockerfile:1
# cost-sync daemon image: the built wheel (SQL migrations inside) on a slim Python, as a non-root user.
# Python 3.11: the version CI tests. No embedded PostgreSQL: the demo extra is not installed.
# buildah/podman: build with `--format docker`, or the OCI default drops the HEALTHCHECK.

FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2"
COPY pyproject.toml README.md ./
COPY src ./src
COPY sql ./sql
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    COST_SYNC_ADMIN_LISTEN=0.0.0.0:9464
COPY --from=build /dist/*.whl /tmp/
RUN pip install --no-cache-dir /tmp/*.whl \
    && rm /tmp/*.whl \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cost-sync
USER 10001
EXPOSE 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["cost-sync"]
CMD ["run"]
