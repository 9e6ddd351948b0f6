#!/usr/bin/env bash
# End-to-end run of tickwire on a local kind cluster, for people with Docker.
#
# What it does: builds the two images, creates a two-node kind cluster, turns a veth pair inside
# the worker node into a "feed NIC" (XDP in generic/SKB mode, as the Intel AF_XDP device plugin's
# kind setup does), installs the chart, applies examples/feedhandler-kind.yaml, publishes a
# generated ITCH 5.0 feed into the veth and waits until the FeedHandler reports Receiving.
#
# Honest limits:
#   - It CANNOT run on tickwire's development and CI machines: they have no Docker engine and
#     cannot pull images. It has not been run there; `tests/chart/test_chart_kind_script.py` only
#     checks its syntax, that the files it uses exist, and that it refuses cleanly without Docker.
#   - A veth and generic XDP show that the whole path works, not how fast it is: no zero-copy,
#     no real NIC queues, no hugepages (the kubelet reads those only at boot), and the CPUs are
#     shared with your desktop. For numbers, use a real feed node.
#
# Needs: docker, kind, kubectl, helm (v3.8+ or v4) on PATH; about 4 GiB of free memory.
# Usage: scripts/kind-e2e.sh            (KEEP_CLUSTER=1 leaves the cluster up afterwards)
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=tickwire-e2e
WORKER="$CLUSTER-worker"          # examples/feedhandler-kind.yaml names this node
FEED_NS=tickwire-feeds
TAG=e2e
FEED_IF=twfeed0                   # the "NIC" the engine binds (queue 0)
SEND_IF=twsend0                   # its peer, where the publisher sends
GROUP=239.1.1.1 PORT=30001        # must match examples/feedhandler-kind.yaml
TIMEOUT=300s

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "kind-e2e: needs ${missing[*]} on PATH (and a running Docker engine)." >&2
  echo "kind-e2e: this cannot run on machines without Docker, such as tickwire's CI." >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "kind-e2e: docker is installed but its engine is not reachable (is dockerd running?)." >&2
  exit 2
fi

cleanup() {
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "kind-e2e: cluster $CLUSTER left running (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
step() { printf '\n==> %s\n' "$*"; }

step "building images tickwire/operator:$TAG and tickwire/agent:$TAG"
docker build -f docker/operator.Dockerfile -t "tickwire/operator:$TAG" .
docker build -f docker/agent.Dockerfile -t "tickwire/agent:$TAG" .

step "creating kind cluster $CLUSTER"
kind create cluster --name "$CLUSTER" --wait 120s --config - <<'KIND'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
KIND
kind load docker-image --name "$CLUSTER" "tickwire/operator:$TAG" "tickwire/agent:$TAG"

step "turning a veth pair in $WORKER into a feed NIC"
docker exec "$WORKER" sh -euc "
  ip link add $FEED_IF type veth peer name $SEND_IF
  ip addr add 198.18.0.1/30 dev $SEND_IF
  ip addr add 198.18.0.2/30 dev $FEED_IF
  ip link set $FEED_IF up
  ip link set $SEND_IF up
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"
# What the operator's placement reads (operator/tickwire_operator/inventory.py).
kubectl label node "$WORKER" tickwire.dev/feed-node=true --overwrite
kubectl annotate node "$WORKER" --overwrite \
  tickwire.dev/feed-cores=1 \
  "tickwire.dev/feed-nics=$FEED_IF=0" \
  tickwire.dev/feed-hugepages=0

step "installing the chart"
kubectl create namespace "$FEED_NS"
kubectl label namespace "$FEED_NS" pod-security.kubernetes.io/enforce=privileged
helm install tickwire charts/tickwire --namespace tickwire-system --create-namespace --wait \
  --set "operator.image.tag=$TAG" --set "agent.image.tag=$TAG" \
  --set "agent.namespaces={$FEED_NS}"

step "applying examples/feedhandler-kind.yaml"
kubectl -n "$FEED_NS" apply -f examples/feedhandler-kind.yaml
kubectl -n "$FEED_NS" wait feedhandler/itch-kind --for=condition=Placed --timeout="$TIMEOUT"
kubectl -n "$FEED_NS" wait feedhandler/itch-kind --for=condition=EngineReady --timeout="$TIMEOUT"

step "publishing a feed into $SEND_IF"
kubectl -n "$FEED_NS" apply -f - <<POD
apiVersion: v1
kind: Pod
metadata:
  name: itch-publisher
spec:
  nodeName: $WORKER
  hostNetwork: true
  restartPolicy: Never
  containers:
    - name: publish
      image: tickwire/agent:$TAG
      command: [tickwire-feed, publish, --line, "A=$GROUP:$PORT", --iface, $SEND_IF,
                --rate, "20000", --duration, "240"]
POD
kubectl -n "$FEED_NS" wait feedhandler/itch-kind --for=condition=Receiving --timeout="$TIMEOUT"

step "result"
kubectl -n "$FEED_NS" get feedhandlers -o wide
rate=$(kubectl -n "$FEED_NS" get feedhandler itch-kind -o jsonpath='{.status.snapshot.rate}')
echo "kind-e2e: itch-kind receives ${rate:-0} messages/s"
awk -v r="${rate:-0}" 'BEGIN { exit !(r > 0) }' || { echo "kind-e2e: FAILED: no message rate" >&2; exit 1; }
echo "kind-e2e: PASSED"
