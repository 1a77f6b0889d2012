# syntax=docker/dockerfile:1
# cost-sync daemon image: the built wheel (SQL migrations inside) on a slim Python, as a non-root user.
# Python 3.11: the version CI tests. No embedded PostgreSQL: the demo extra is not installed.
# buildah/podman: build with `--format docker`, or the OCI default drops the HEALTHCHECK.

# The commit the image is built from: `docker build --build-arg GIT_REVISION=$(git rev-parse HEAD) .`
# (the build context has no .git). It goes into the wheel's metadata (hatch_build.py), hence
# cost_sync_build_info{revision}, and into the org.opencontainers.image.revision label.
ARG GIT_REVISION=unknown

FROM python:3.11-slim AS build
ARG GIT_REVISION
WORKDIR /src
RUN pip install --no-cache-dir "build==1.2.2"
COPY pyproject.toml README.md hatch_build.py ./
COPY src ./src
RUN python -m build --wheel --outdir /dist

FROM python:3.11-slim
ARG GIT_REVISION
# The project's version (pyproject.toml; a test keeps the two equal).
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="cost-sync" \
      org.opencontainers.image.description="Keeps vps_instances.approximate_cost true: monthly USD estimates of Hostwinds VPS instances, written to PostgreSQL." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.vendor="PenguinMails" \
      org.opencontainers.image.licenses="LicenseRef-Proprietary" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
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
