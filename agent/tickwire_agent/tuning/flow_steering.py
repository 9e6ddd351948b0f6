"""Flows on the right queue: one ntuple rule per line, steering the line's UDP flow to the queue
the engine's socket is bound to.

The steering program only sees frames that the NIC delivers to the engine's queue; without a
rule, RSS spreads a line's packets by hash, and a feed on queue 3 would see none of them if the
hash says queue 0. NICs with ntuple filters (ixgbe, i40e, ice, mlx5, bnxt, sfc, ...) take one rule
per (group, port[, source][, vlan]) -> queue. Virtual NICs do not (veth and virtio_net have no
rx classification), and there the plan's flowSteering decides:

    auto    rules where the NIC has them, else status says {"mode": "none", "reason": ...}
    ntuple  rules or a permanent error naming the reason (preflight: before anything changes)
    off     no rules (someone else steers: a switch, a tc filter, a single-queue NIC)

Each rule is journaled (for a location this agent picked, before it is installed) and deleted
at stop and by `restore`, only if the slot still holds this rule. Locations are picked under
the node lock, so two agents never pick the same free slot.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..journal import Journal
from .ethtool_rxnfc import RX_CLS_LOC_ANY, Rule, RuleTable
from .settings import Setting
from .shared import NodeState

log = logging.getLogger(__name__)


# How an interface's rule table is reached; the unit tests put a driver stand-in here.
table_for = RuleTable


class NoFlowSteering(RuntimeError):
    """The NIC cannot steer flows (the reason is the message)."""


@dataclass
class Outcome:
    mode: str                       # "ntuple" | "none"
    reason: str
    rules: list[int] = field(default_factory=list)

    def observed(self) -> dict:
        return {"mode": self.mode, "reason": self.reason, "rules": list(self.rules)}


def rules_for(plan) -> list[Rule]:
    return [Rule(line.group, line.port, plan.queue, line.source, getattr(line, "vlan", None))
            for line in plan.lines]


def support(table: RuleTable) -> str:
    """'' when the NIC takes ntuple rules, else why not (for status and errors)."""
    try:
        table.capacity()
    except OSError as e:
        driver = table.driver() or "unknown driver"
        return (f"{table.ifname} ({driver}) has no ntuple flow steering (ETHTOOL_GRXCLSRLCNT: "
                f"{e.strerror or e})")
    return ""


def install(plan, journal: Journal, node: NodeState, table: RuleTable | None = None) -> Outcome:
    """Install the plan's rules (flowSteering auto|ntuple); raises NoFlowSteering when the NIC
    takes none (an "auto" caller reports that, an "ntuple" one fails). A rule the NIC refuses
    removes the ones installed before it: half a feed steered is not a mode."""
    table = table or table_for(plan.interface)
    reason = support(table)
    if reason:
        raise NoFlowSteering(reason)
    installed: list[tuple[Any, int]] = []
    try:
        for rule in rules_for(plan):
            with node.locked():
                _size, _count, driver_picks = table.capacity()
                if driver_picks:
                    location = table.insert(rule, RX_CLS_LOC_ANY)
                    entry = journal.record(NtupleRule(plan.interface, location, rule), None, "installed")
                else:
                    location = table.free_location()
                    entry = journal.record(NtupleRule(plan.interface, location, rule), None, "installed")
                    try:
                        table.insert(rule, location)
                    except OSError:
                        journal.mark_restored(entry)   # never installed
                        raise
            installed.append((entry, location))
    except OSError as e:
        for entry, location in reversed(installed):
            try:
                NtupleRule(plan.interface, location, entry.setting.rule).restore(None, "installed")
                journal.mark_restored(entry)
            except OSError as undo:
                log.error("cannot remove ntuple rule %d from %s: %s", location, plan.interface, undo)
        raise NoFlowSteering(f"{plan.interface} refused an ntuple rule ({e.strerror or e}); is "
                             f"ntuple-filters on (ethtool -k {plan.interface})?") from None
    return Outcome("ntuple", f"{len(installed)} ntuple rule(s) steer the lines to queue {plan.queue}",
                   [location for _entry, location in installed])


class NtupleRule(Setting):
    """'Our rule at this location', journaled; restoring deletes it if the slot still holds it."""

    kind = "ntuple_rule"

    def __init__(self, ifname: str, location: int, rule: Rule | dict, label: str = "flow_steering"):
        self.ifname = ifname
        self.location = location
        self.rule = rule if isinstance(rule, Rule) else Rule(**rule)
        self.label = label

    def read(self) -> str:
        return "installed" if table_for(self.ifname).get(self.location) == self.rule else "absent"

    def write(self, value: Any) -> None:
        if value != "absent" and value is not None:
            raise ValueError("the agent only removes ntuple rules through the journal")
        table = table_for(self.ifname)
        if table.get(self.location) == self.rule:
            table.delete(self.location)

    def restore(self, previous: Any, applied: Any) -> None:
        self.write(None)

    def drifted(self, current: Any, applied: Any) -> bool:
        return current != applied

    def to_record(self) -> dict:
        r = self.rule
        return {"kind": self.kind, "ifname": self.ifname, "location": self.location, "label": self.label,
                "rule": {"group": r.group, "port": r.port, "queue": r.queue, "source": r.source, "vlan": r.vlan}}
