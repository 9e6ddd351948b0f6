"""The operator's ledger: what it gave each FeedHandler (node, queue, cores, hugepages, the
agent's metrics port, and the CPUs the agent was seen running on), kept where no agent can write it.

It lives in the annotation `tickwire.dev/allocation` on the FeedHandler, written by a patch of the
object itself. Agents may patch only their own FeedHandler's `status` subresource, and a status
patch cannot change metadata (the API server drops everything but `.status` from it), so an
agent can neither forge nor erase an allocation. `status.placement` is only a display copy for
`kubectl get`; it is never read back as the truth.

The previous release kept the ledger in `status.placement`. `legacy_allocation` reads it once,
when the operator resumes a FeedHandler that has no ledger annotation yet (see migration in
reconcile.py).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .placement import Allocation

LEDGER_ANNOTATION = "tickwire.dev/allocation"


def read_ledger(body: Mapping[str, Any]) -> Allocation | None:
    """The allocation recorded on this FeedHandler; None when there is none (or it is unreadable,
    which only a hand edit can cause: the FeedHandler is then placed again)."""
    text = ((body.get("metadata") or {}).get("annotations") or {}).get(LEDGER_ANNOTATION)
    if not text:
        return None
    try:
        return Allocation.from_status(json.loads(text))
    except ValueError:
        return None


def has_ledger(body: Mapping[str, Any]) -> bool:
    return LEDGER_ANNOTATION in ((body.get("metadata") or {}).get("annotations") or {})


def ledger_text(allocation: Allocation | None) -> str | None:
    """The annotation's value (None deletes it): compact, keys sorted, so equal is equal."""
    if allocation is None:
        return None
    record: dict[str, Any] = {"node": allocation.node, "interface": allocation.interface,
                              "queue": allocation.queue, "cores": list(allocation.cores),
                              "hugepages": allocation.hugepages}
    if allocation.metrics_port is not None:
        record["metricsPort"] = allocation.metrics_port
    if allocation.running_cores:
        record["runningCores"] = list(allocation.running_cores)
        record["housekeepingCores"] = list(allocation.housekeeping_cores)
    return json.dumps(record, sort_keys=True, separators=(",", ":"))


def legacy_allocation(body: Mapping[str, Any]) -> Allocation | None:
    """The previous release's ledger, status.placement (planned cores only)."""
    allocation = Allocation.from_status((body.get("status") or {}).get("placement"))
    return allocation.planned() if allocation is not None else None
