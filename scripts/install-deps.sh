#!/usr/bin/env bash
# Installs what tickwire needs on a fresh Debian 12 machine: system packages (apt) for the engine,
# its tests and the benchmark, then a virtualenv with the project installed editable.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential pkg-config clang llvm libclang-rt-14-dev   # engine, XDP program, fuzzer (libFuzzer + ASan/UBSan)
  libxdp-dev libbpf-dev xdp-tools bpftool                    # AF_XDP sockets and XDP loading
  iproute2 ethtool iputils-ping tcpdump procps util-linux     # namespaces, veth, checks, setpriv
  prometheus                                                  # the real Prometheus of the integration test
  dpdk-dev                                                    # dpdk-testpmd (net_af_xdp): a benchmark contender
  python3-venv python3-dev
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
    exit 1
  fi
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian starts the prometheus service on install; the tests run their own instance.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip setuptools wheel cffi
"$VENV/bin/pip" install -q -e ".[demo,test]"
