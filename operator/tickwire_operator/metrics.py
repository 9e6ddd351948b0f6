"""The operator's own Prometheus metrics (the feeds' metrics come from the agents)."""
from __future__ import annotations

import time
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

REGISTRY = CollectorRegistry()

RECONCILES = Counter("tickwire_operator_reconciles", "Reconcile passes, by trigger and outcome.",
                     ["trigger", "outcome"], registry=REGISTRY)
RECONCILE_SECONDS = Histogram("tickwire_operator_reconcile_duration_seconds", "Time of one reconcile pass.",
                              ["trigger"], registry=REGISTRY,
                              buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ERRORS = Counter("tickwire_operator_errors", "Reconcile passes that failed, by trigger and error type.",
                 ["trigger", "error"], registry=REGISTRY)
PLACEMENT_FAILURES = Counter("tickwire_operator_placement_failures",
                             "Placements that found no fit or an invalid spec, by reason.", ["reason"],
                             registry=REGISTRY)
PODS_CREATED = Counter("tickwire_operator_agent_pods_created", "Agent Pods created.", registry=REGISTRY)
PODS_REPLACED = Counter("tickwire_operator_agent_pods_replaced", "Agent Pods deleted because the plan changed.",
                        registry=REGISTRY)
PODS_FORCE_DELETED = Counter("tickwire_operator_agent_pods_force_deleted",
                             "Agent Pods deleted with grace 0: their node was lost or they hung Terminating.",
                             ["why"], registry=REGISTRY)
POD_FAILURES = Counter("tickwire_operator_agent_pod_failures",
                       "Agent Pod failures seen (admission refused, image pull, crash loop, failed), by reason.",
                       ["reason"], registry=REGISTRY)
RELEASES = Counter("tickwire_operator_releases", "Allocations released by the finalizer.", registry=REGISTRY)
PLACED = Gauge("tickwire_operator_feedhandlers_placed", "FeedHandlers holding an allocation.", registry=REGISTRY)
SLO_BREACHED = Gauge("tickwire_operator_latency_slo_breached",
                     "1 while a FeedHandler's reported p99 exceeds its latencySLO.", ["namespace", "name"],
                     registry=REGISTRY)


@contextmanager
def timed_reconcile(trigger: str):
    """Count and time one pass; the body sets `outcome[0]`."""
    start = time.perf_counter()
    outcome = ["ok"]
    try:
        yield outcome
    except Exception as exc:
        ERRORS.labels(trigger, type(exc).__name__).inc()
        outcome[0] = "error"
        raise
    finally:
        RECONCILE_SECONDS.labels(trigger).observe(time.perf_counter() - start)
        RECONCILES.labels(trigger, outcome[0]).inc()


def serve(port: int, address: str = "0.0.0.0") -> None:
    start_http_server(port, addr=address, registry=REGISTRY)
