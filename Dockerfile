# syntax=docker/dockerfile:1
#
# One image per depthpilot service, all from this file: `docker build --target <service> .`
# (docker-compose.yml does that for every service). Targets: collector features predictor
# trader notifier tgbot api. Each runs `python -m <service>` as an unprivileged user.

ARG PYTHON_VERSION=3.11

# --------------------------------------------------------------------------- base
FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# --------------------------------------------------------------------------- builder
FROM base AS builder
RUN python -m venv /opt/venv
# CPU-only torch first: from PyPI, `torch` is a CUDA build of several GB. Keep the version
# equal to the pin in pyproject.toml and requirements/constraints.txt.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
# Runtime dependencies only (pyproject.toml's `dependencies`, no extras), at the exact versions of
# the lock (requirements/constraints.txt, `make lock`), in their own layer: a code change does
# not reinstall them. torch is already satisfied by the CPU build above.
COPY pyproject.toml /src/pyproject.toml
COPY requirements/constraints.txt /src/requirements/constraints.txt
RUN python -c "import tomllib; deps = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
 && pip install -c /src/requirements/constraints.txt --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt
# The project itself (no editable install, no dev extras).
COPY . /src
RUN pip install --no-deps /src \
 && python -c "import depthpilot, collector, features, predictor, trader, notifier, tgbot, api"

# --------------------------------------------------------------------------- runtime
FROM base AS runtime
RUN groupadd --system --gid 10001 depthpilot \
 && useradd --system --uid 10001 --gid depthpilot --home-dir /app --create-home --shell /usr/sbin/nologin depthpilot \
 && mkdir -p /data \
 && chown depthpilot:depthpilot /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
USER depthpilot
# numba's compiled kernels (batch book rebuild, feature checks) are cached where the service
# user can write: site-packages is read-only to it
ENV DEPTHPILOT_DATA_DIR=/data \
    DEPTHPILOT_HEARTBEAT_FILE=/tmp/depthpilot.heartbeat \
    NUMBA_CACHE_DIR=/app/.cache/numba
VOLUME ["/data"]
# Heartbeat check (docker-compose.yml repeats it explicitly; `api` checks GET /health):
# the service touches $DEPTHPILOT_HEARTBEAT_FILE while it is healthy.
HEALTHCHECK --interval=20s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; p = os.environ['DEPTHPILOT_HEARTBEAT_FILE']; sys.exit(0 if os.path.exists(p) and time.time() - os.path.getmtime(p) < 60 else 1)"]

# --------------------------------------------------------------------------- services
FROM runtime AS collector
CMD ["python", "-m", "collector"]

FROM runtime AS features
CMD ["python", "-m", "features"]

FROM runtime AS predictor
CMD ["python", "-m", "predictor"]

FROM runtime AS trader
CMD ["python", "-m", "trader"]

FROM runtime AS notifier
CMD ["python", "-m", "notifier"]

FROM runtime AS tgbot
CMD ["python", "-m", "tgbot"]

FROM runtime AS api
ENV API_HOST=0.0.0.0 \
    API_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=20s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"]
CMD ["python", "-m", "api"]
