# syntax=docker/dockerfile:1
# The tickwire agent image: the node agent and the AF_XDP engine it drives. The operator runs one
# agent Pod per FeedHandler from this image; the chart never runs it itself.
#
#   docker build -f docker/agent.Dockerfile -t tickwire/agent:0.1.0 .
#
# Stage 1 builds the engine (cffi extension against libxdp/libbpf, XDP program with clang) into a
# wheel, with every dependency as a wheel beside it. Stage 2 is Debian slim with the two shared
# libraries the engine links and Python, and installs those wheels offline: no compiler, no
# headers, no package index at run time.
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
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libxdp1 libbpf1 python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python3 -m venv /opt/tickwire \
 && /opt/tickwire/bin/pip install --no-cache-dir --no-index --find-links=/wheels tickwire
ENV PATH=/opt/tickwire/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="tickwire-agent" \
      org.opencontainers.image.description="tickwire node agent and AF_XDP feed engine" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root on purpose: the agent needs CAP_NET_ADMIN, CAP_BPF, CAP_PERFMON, CAP_IPC_LOCK, CAP_SYS_NICE
# and CAP_NET_RAW, and Kubernetes grants added capabilities to a non-root process only through
# file capabilities. The Pod drops every other capability (docs/privileges.md).
USER 0:0
ENTRYPOINT ["tickwire-agent"]
CMD ["--help"]
