# Elevate's five services in one image (the last stage, `runtime`); the command names it:
#   docker run elevate elevate-request-api   (or elevate-approval, elevate-grant-worker,
#   elevate-audit-ingest, elevate-notifier)
# Everything is installed at build time from uv.lock: at run time nothing is written, so
# the image runs with a read-only root filesystem and a writable /tmp only.
# tests/integration/deploy/test_image.py rehearses this file's build steps without a
# container engine: paths come from ENV so that the rehearsal can put them elsewhere.

FROM python:3.11.7-slim-bookworm AS build

# uv's version as scripts/bootstrap.sh installs it; its own Python downloads stay off.
ENV UV_VERSION=0.13.8 \
    UV_HOME=/opt/uv \
    VIRTUAL_ENV=/opt/elevate/venv \
    UV_PROJECT_ENVIRONMENT=/opt/elevate/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

WORKDIR /src
COPY pyproject.toml uv.lock ./
COPY libs/ libs/
COPY services/ services/
# The workspace names this member; the image leaves it out (moto, the mock IdP, mailbox).
COPY deploy/local/pyproject.toml deploy/local/

# uv into its own environment, then the services and their locked dependencies as wheels
# (no editable links back to /src), compiled to bytecode now: nothing is written at start.
# The download cache is a cache mount: kept between builds, never in the image.
RUN --mount=type=cache,target=/root/.cache \
    python3.11 -m venv "$UV_HOME" \
    && "$UV_HOME/bin/pip" install --disable-pip-version-check "uv==$UV_VERSION" \
    && "$UV_HOME/bin/uv" sync --frozen --no-dev --no-editable --python python3.11 \
      --package elevate-request-api --package elevate-approval \
      --package elevate-grant-worker --package elevate-audit-ingest \
      --package elevate-notifier

# docker-compose.yml's local stand-ins (moto seeded, the AWS proxy, the OIDC provider, the
# mailbox, the Kafka set-up): `--target local`. Never deployed; the image below is.
FROM build AS build-local
ENV UV_PROJECT_ENVIRONMENT=/opt/elevate/local-venv
COPY deploy/local/ deploy/local/
RUN --mount=type=cache,target=/root/.cache \
    "$UV_HOME/bin/uv" sync --frozen --no-dev --no-editable --python python3.11 \
      --package elevate-local

FROM python:3.11.7-slim-bookworm AS local
ENV VIRTUAL_ENV=/opt/elevate/local-venv \
    PATH=/opt/elevate/local-venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build-local /opt/elevate/local-venv /opt/elevate/local-venv
USER 10001:10001
WORKDIR /opt/elevate
CMD ["python", "-m", "elevate_local.compose", "--help"]

# The services: the default target.
FROM python:3.11.7-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="Elevate" \
      org.opencontainers.image.description="Temporary, approved, audited access to AWS accounts through IAM Identity Center"

ENV VIRTUAL_ENV=/opt/elevate/venv \
    PATH=/opt/elevate/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ELEVATE_HTTP_HOST=0.0.0.0

COPY --from=build /opt/elevate/venv /opt/elevate/venv

# The Helm chart's runAsUser is this number; no name, no home, no shell of its own.
USER 10001:10001
WORKDIR /opt/elevate
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["elevate", "healthcheck"]
CMD ["elevate-request-api"]
