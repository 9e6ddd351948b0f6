"""Apply a plan's host tuning, one journaled change at a time, and say what was done.

Order matters only for restore, which the journal does newest-first. Failures of single knobs
are reported (the Tuned condition carries them) rather than fatal: a feed with a default
gro_flush_timeout still delivers data, just with more latency.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from ..journal import Journal
from ..plan import Plan, PlanError, Problem
from . import cpu, flow_steering, hugepages, multicast, nic, shared
from .multicast import Memberships
from .settings import Setting

log = logging.getLogger(__name__)


@dataclass
class Watched:
    """A setting the drift checker re-reads, with the value the plan wants there."""
    setting: Setting
    applied: Any

    def observe(self) -> tuple[Any, Any]:
        """(what is there, what belongs there now)."""
        return self.setting.read(), self.applied

    def put_back(self, expected: Any) -> None:
        self.setting.write(expected)


@dataclass
class SharedWatched(Watched):
    """A knob held in the node account: what belongs there is the account's value, which every
    holder's wish decided (a neighbour's higher channel count is not drift), and putting it back
    happens under the node lock, only if the account still says so."""
    node: shared.NodeState = None
    key: str = ""

    def observe(self) -> tuple[Any, Any]:
        # Under the lock: a neighbour records a new value in the account just before it writes the
        # knob, and the half-way state between the two is not drift.
        with self.node.locked() as account:
            value = account.knob_value(self.key)
            return self.setting.read(), self.applied if value is None else value

    def put_back(self, expected: Any) -> None:
        with self.node.locked() as account:
            value = account.knob_value(self.key)
            if value is not None and self.setting.read() != value:
                self.setting.write(value)


@dataclass
class TuningReport:
    watched: list[Watched] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # what was done, for people
    problems: list[str] = field(default_factory=list)   # what was asked and could not be done
    warnings: list[str] = field(default_factory=list)   # done differently, and handled (normal pages)
    hugepages: bool = False
    agent_cpus: set[int] | None = None
    irq: int | None = None
    flow_steering: dict | None = None                   # status.observed.flowSteering


class HostTuner:
    def __init__(self, plan: Plan, journal: Journal, cpus: cpu.CpuChoice, node: shared.NodeState,
                 root: str = "/", irq_dir: str = "/proc/irq"):
        """`node`: the node state directory, this agent already registered there as a holder."""
        self.plan = plan
        self.node = node
        self.cpus = cpus
        self.irq_dir = irq_dir
        self.journal = journal
        self.root = root
        self.memberships = Memberships(plan.interface)

    def apply(self) -> TuningReport:
        report = TuningReport()
        self._hugepages(report)
        self._channels(report)
        for setting, value in nic.busy_poll_knobs(self.plan.interface, self.plan.busy_poll.napi_defer_hard_irqs,
                                                  self.plan.busy_poll.gro_flush_timeout_ns, self.root):
            self._share(report, setting, shared.HIGHEST, value)
        self._flow_steering(report)
        self._irq_affinity(report)
        self._agent_affinity(report)
        self._multicast(report)
        return report

    def release(self) -> None:
        """Drop what is not journaled because the kernel forgets it with us: the group joins."""
        self.memberships.close()

    def _set(self, report: TuningReport, setting: Setting, value: Any) -> None:
        """Set one knob through the journal, read it back, and watch it from now on."""
        try:
            previous = setting.read()
            if previous != value:
                entry = self.journal.record(setting, previous, value)
                try:
                    setting.write(value)
                except OSError:
                    self.journal.mark_restored(entry)   # nothing changed
                    raise
            readback = setting.read()
        except OSError as e:
            report.problems.append(f"{setting.label}: cannot set {value} ({e.strerror or e})")
            return
        if readback != value:
            report.problems.append(f"{setting.label}: wrote {value}, the kernel reads back {readback}")
            return
        report.watched.append(Watched(setting, value))
        report.notes.append(f"{setting.label} {previous} -> {value}" if previous != value
                            else f"{setting.label} already {value}")

    def _share(self, report: TuningReport, setting: Setting, policy: str, wish: Any) -> None:
        """Hold a device-wide knob in the node account (first holder sets, last restores), journal
        the holding first, and watch the account's value from now on."""
        key = shared_key(self.plan.interface, setting.label)
        try:
            found = setting.read()   # for people reading the journal; restoring releases, whatever it was
        except OSError as e:
            report.problems.append(f"{setting.label}: cannot read ({e.strerror or e})")
            return
        entry = self.journal.record(shared.HeldKnob(self.node.path, self.node.holder.id, key, setting.label),
                                    found, wish)
        try:
            with self.node.locked() as account:
                hold = account.hold_knob(key, setting, policy, self.node.holder, wish)
                readback = setting.read()
        except OSError as e:
            self.journal.mark_restored(entry)   # the account is as before: nothing to release
            report.problems.append(f"{setting.label}: cannot set {wish} ({e.strerror or e})")
            return
        if readback != hold.value:
            report.problems.append(f"{setting.label}: wrote {hold.value}, the kernel reads back {readback}")
        elif policy == shared.HIGHEST and readback != wish:
            holders = ", ".join(sorted(hold.others))
            report.warnings.append(f"{setting.label} stays {readback}, the highest value the agents sharing "
                                   f"{self.plan.interface} asked for (this plan: {wish}; holders: {holders})")
        report.watched.append(SharedWatched(setting, hold.value, node=self.node, key=key))
        report.notes.append(hold.describe(setting.label, wish))

    def _hugepages(self, report: TuningReport) -> None:
        node = self.plan.hugepages.numa_node
        if node is None:
            node = hugepages.nic_numa_node(self.plan.interface, self.root)
        result = hugepages.reserve(self.plan.hugepages.count, node, self.journal, self.node, self.root)
        report.hugepages = result.granted
        (report.notes if result.granted or self.plan.hugepages.count == 0 else report.warnings).append(result.message)

    def _channels(self, report: TuningReport) -> None:
        try:
            setting, target, problem = nic.channels_needed(self.plan.interface, self.plan.queue)
        except OSError as e:
            if self.plan.queue == 0:
                report.notes.append(f"{self.plan.interface} reports no channels ({e}); queue 0 always exists")
            else:
                report.problems.append(f"channels: cannot read ({e})")
            return
        if problem:
            report.problems.append(problem)
        else:
            # Held even when the queue exists already: a neighbour may have raised the count, and
            # its leaving must not take away this agent's queue.
            self._share(report, setting, shared.RAISE_ONLY, target)

    def _flow_steering(self, report: TuningReport) -> None:
        if self.plan.flow_steering == "off":
            report.flow_steering = flow_steering.Outcome("none", "flowSteering is off in the plan").observed()
            return
        try:
            outcome = flow_steering.install(self.plan, self.journal, self.node)
        except flow_steering.NoFlowSteering as e:
            if self.plan.flow_steering == "ntuple":   # permanent: no restart gives the NIC filters
                raise PlanError([Problem("flowSteering", str(e), "run the feed on a NIC with ntuple filters, "
                                         "or set flowSteering to auto or off")], "plan") from None
            outcome = flow_steering.Outcome("none", str(e))
            report.notes.append(f"flow steering: none: {e}")
        else:
            report.notes.append(f"flow steering: {outcome.reason} (rule location(s) "
                                f"{', '.join(map(str, outcome.rules))})")
        report.flow_steering = outcome.observed()

    def _irq_affinity(self, report: TuningReport) -> None:
        if not self.plan.irq_affinity:
            return
        irq = nic.find_queue_irq(self.plan.interface, self.plan.queue, self.root)
        if irq is None:
            report.notes.append(f"irq_affinity: {self.plan.interface} queue {self.plan.queue} has no IRQ of "
                                "its own (virtual device?): nothing to pin")
            return
        report.irq = irq
        self._set(report, nic.irq_affinity_setting(irq, self.irq_dir), nic.irq_affinity_value(self.plan.irq_affinity))

    def _agent_affinity(self, report: TuningReport) -> None:
        report.agent_cpus = cpu.keep_process_on(self.cpus.housekeeping)
        report.notes.append(f"agent threads moved to CPU {cpu.format_cpulist(report.agent_cpus)}")

    def _multicast(self, report: TuningReport) -> None:
        for line in self.plan.lines:
            what = f"{line.group} from {line.source}" if line.source else line.group
            try:
                self.memberships.join(line.group, line.source)
                joined = (multicast.kernel_sources(self.plan.interface, self.root) if line.source
                          else multicast.kernel_groups(self.plan.interface, self.root))
            except OSError as e:
                report.problems.append(f"multicast: cannot join {what} on {self.plan.interface} ({e.strerror})")
                continue
            if ((line.group, line.source) if line.source else line.group) not in joined:
                report.problems.append(f"multicast: joined {what}, but the kernel does not list it for "
                                       f"{self.plan.interface}")
            else:
                report.notes.append(f"joined {what} on {self.plan.interface} (line {line.name})")


def shared_key(ifname: str, label: str) -> str:
    """The account's name for a device knob. Two network namespaces ("nodes" in tests, Pods without
    hostNetwork) may each have an eth0, so the key names the namespace too."""
    return f"netns:{os.stat('/proc/self/ns/net').st_ino}/{ifname}/{label}"
