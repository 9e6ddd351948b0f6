# syntax=docker/dockerfile:1
# The tickwire operator image (kopf). Also runs the chart's CRD upgrade hook, which needs only
# Python and the Kubernetes client that the operator has anyway.
#
#   docker build -f docker/operator.Dockerfile -t tickwire/operator:0.1.0 .
#
# Built like the agent image (one distribution, one wheel), but the runtime leaves out libxdp and
# libbpf: the operator never loads the engine (tests/chart/test_chart_dockerfiles.py checks that),
# and it runs as an unprivileged user on a read-only root filesystem.
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential pkg-config clang llvm libxdp-dev libbpf-dev python3-venv python3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build-venv \
 && /opt/build-venv/bin/pip install --no-cache-dir --upgrade pip setuptools wheel cffi
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY native/ native/
COPY agent/ agent/
COPY operator/ operator/
# Every package dir pyproject.toml lists ([tool.setuptools] package-dir), or `pip wheel .` fails.
COPY demo/ demo/
RUN /opt/build-venv/bin/pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${DEBIAN_IMAGE} AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/tickwire \
 && /opt/tickwire/bin/pip install --no-cache-dir --no-index --find-links=/wheels tickwire
RUN groupadd --system --gid 10001 tickwire \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin tickwire
ENV PATH=/opt/tickwire/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="tickwire-operator" \
      org.opencontainers.image.description="tickwire Kubernetes operator (kopf)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The same numeric user the chart's runAsUser names, so runAsNonRoot can verify it.
USER 10001:10001
# The chart's defaults: kopf's liveness probe on 8081, the operator's metrics on 8080.
EXPOSE 8080 8081
ENTRYPOINT ["python3", "-m", "tickwire_operator"]
# One replica, cluster-wide (the operator always is; it takes no namespace flag), as the chart
# runs it by default (charts/tickwire/templates/operator-deployment.yaml).
CMD ["--standalone", "--liveness=http://0.0.0.0:8081/healthz"]
