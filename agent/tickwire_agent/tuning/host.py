"""Apply a plan's host tuning, one journaled change at a time, and say what was done.

Order matters only for restore, which the journal does newest-first. Failures of single knobs
are reported (the Tuned condition carries them) rather than fatal: a feed with a default
gro_flush_timeout still delivers data, just with more latency.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ..journal import Journal
from ..plan import Plan
from . import cpu, hugepages, multicast, nic
from .multicast import Memberships
from .settings import Setting

log = logging.getLogger(__name__)


@dataclass
class Watched:
    """A setting the drift checker re-reads, with the value the plan wants there."""
    setting: Setting
    applied: Any


@dataclass
class TuningReport:
    watched: list[Watched] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)      # what was done, for people
    problems: list[str] = field(default_factory=list)   # what was asked and could not be done
    warnings: list[str] = field(default_factory=list)   # done differently, and handled (normal pages)
    hugepages: bool = False
    agent_cpus: set[int] | None = None
    irq: int | None = None


class HostTuner:
    def __init__(self, plan: Plan, journal: Journal, cpus: cpu.CpuChoice, root: str = "/",
                 irq_dir: str = "/proc/irq"):
        self.plan = plan
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
            self._set(report, setting, value)
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

    def _hugepages(self, report: TuningReport) -> None:
        node = self.plan.hugepages.numa_node
        if node is None:
            node = hugepages.nic_numa_node(self.plan.interface, self.root)
        result = hugepages.reserve(self.plan.hugepages.count, node, self.journal, self.root)
        report.hugepages = result.granted
        (report.notes if result.granted or self.plan.hugepages.count == 0 else report.warnings).append(result.message)
        if result.setting is not None:
            report.watched.append(Watched(result.setting, result.applied))

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
        elif setting is None:
            report.notes.append(f"channels: queue {self.plan.queue} exists ({target} RX channels)")
        else:
            self._set(report, setting, target)

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
