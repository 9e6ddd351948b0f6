"""The agent's life: plan -> tuned host -> supervised engine -> observations -> host as found.

    restore a journal left by a crashed agent
    check the plan against this host          (nothing touched yet: a misfit changes nothing)
    serve /metrics                            (a taken port also fails before anything changes)
    tune the host, journaling each change
    run the engine, once a second read its stats: metrics, conditions, status, drift, a summary line
    on SIGTERM/SIGINT, a duration's end, or an engine that rejects its config: stop the engine,
    leave the multicast groups, restore the journal newest-first

Everything the agent itself runs (this loop, the metrics server, the status client, the
supervisor thread) is kept off the dedicated cores; only the engine's poll thread runs there.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field

from tickwire_engine.config import DEFAULT_BPFFS_ROOT

from . import conditions, ports, preflight, stream
from .conditions import Condition, Observation
from .counter_reset import RunTracker
from .drift import DriftChecker
from .journal import Journal, RestoreResult
from .latency_window import LatencyWindow
from .metrics import AgentView, start_server
from .plan import Plan, PlanError, Problem
from .statedir import StateDir
from .supervisor import Exit, State, Supervisor, stop_orphan
from .tuning import cpu
from .tuning.host import HostTuner, TuningReport
from .tuning.shared import DEFAULT_NODE_STATE_DIR, NodeState
from .tuning.xdp import SteeringQueue

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_BAD_PLAN, EXIT_ENGINE_CONFIG, EXIT_RESTORE_FAILED = 0, 1, 2, 3, 4


class AgentError(RuntimeError):
    """A failure with a message meant for the person running the agent."""


@dataclass
class Options:
    state_dir: str
    kubeconfig: str | None = None
    quiet: bool = False
    duration: float | None = None
    engine_command: list[str] = field(default_factory=lambda: [sys.executable, "-m", "tickwire_engine.cli"])
    stats_interval: float = 0.5
    drift_interval: float = 2.0
    backoff_initial: float = 1.0
    root: str = "/"
    irq_dir: str = "/proc/irq"       # in a Pod: where the host's /proc/irq is mounted read-write
    node_name: str = ""              # reported in status.observed (the downward API in a Pod)
    pod_name: str = ""
    remove_state_on_clean_exit: bool = False   # in a Pod: nodes must not collect a dir per FeedHandler
    node_state_dir: str = DEFAULT_NODE_STATE_DIR   # the node-wide lock and account of shared settings
    bpffs_root: str = DEFAULT_BPFFS_ROOT           # where the interfaces' shared steering programs are pinned


def restore_leftovers(state: StateDir, journal: Journal, out) -> list[RestoreResult]:
    """Put back what a previous agent (crashed, SIGKILLed) changed and never restored: first stop
    the engine it left running (SIGTERM: the engine detaches its own XDP program), then unwind
    its journal."""
    orphan = stop_orphan(state.file("engine.pid"), marker=state.stats_path)
    if orphan is not None:
        print(f"stopped engine {orphan} left running by an earlier agent", file=out, flush=True)
    pending = journal.pending()
    if not pending:
        return []
    print(f"restoring {len(pending)} host setting(s) left by an earlier agent", file=out, flush=True)
    results = journal.restore_all()
    for r in results:
        print(f"  {r.entry.setting.label}: back to {r.entry.previous}"
              + (f" FAILED: {r.error}" if r.error else ""), file=out, flush=True)
    return results


def rerequest_args(r) -> list[str]:
    """The engine CLI's flags for the plan's re-request server and limits ([] when off)."""
    if r is None:
        return []
    return ["--rerequest", r.server, "--rerequest-max-messages", str(r.max_messages),
            "--rerequest-timeout-ms", str(r.timeout_ms), "--rerequest-attempts", str(r.attempts),
            "--rerequest-rate", str(r.rate), "--rerequest-burst", str(r.burst)]


class Agent:
    def __init__(self, plan: Plan, options: Options, out=None):
        self.plan = plan
        self.options = options
        self.out = out or sys.stdout
        self.state = StateDir(options.state_dir)
        self.node = NodeState(options.node_state_dir)
        self._observed: dict = {}
        self.journal: Journal | None = None
        self.view = AgentView(plan.feed)
        self.view.books = plan.books.enabled
        self.stop_requested = threading.Event()
        self.tuning: TuningReport | None = None
        self.supervisor: Supervisor | None = None
        self.drift: DriftChecker | None = None
        self.reporter = None
        self._tuner: HostTuner | None = None
        self._server = None
        self._metrics_port: int | None = None
        self._last_gaps = 0
        self._runs = RunTracker()
        self._last_gap_at: float | None = None
        self._last_conditions: dict[str, tuple[str, str]] = {}
        self._stats: dict | None = None
        self.latency_window = LatencyWindow()
        self._steering: SteeringQueue | None = None
        self.cpus: cpu.CpuChoice | None = None

    # ---- the whole life ------------------------------------------------------------------------

    def run(self) -> int:
        self.state.lock()
        try:
            self.journal = Journal(self.state.path)
            if any(not r.ok for r in restore_leftovers(self.state, self.journal, self.out)):
                raise AgentError(f"the earlier agent's host changes could not all be restored; see "
                                 f"{self.journal.path} (run `tickwire-agent restore --state-dir {self.state.path}`)")
            preflight.check(self.plan, self.options.root)
            try:
                self.node.register(plan_identity(self.plan))
            except OSError as e:
                raise AgentError(f"cannot use the node state directory {self.node.path} ({e.strerror}); in a "
                                 "Pod it is a hostPath (DirectoryOrCreate), by hand pass --node-state-dir") from None
            self._choose_cpus()
            self._start_metrics()
            self._start_status()
            self._tune()
            self._start_engine()
            self._loop()
        finally:
            code = self._teardown()
            if self.options.remove_state_on_clean_exit and self._clean_exit(code):
                self.state.remove()
            self.state.unlock()
        if self.supervisor is not None and self.supervisor.state is State.FAILED:
            return EXIT_ENGINE_CONFIG
        return code

    def _clean_exit(self, code: int) -> bool:
        """Host fully restored and nothing to look into: the state directory has served its purpose."""
        failed = self.supervisor is not None and self.supervisor.state is State.FAILED
        return code == EXIT_OK and not failed and (self.journal is None or not self.journal.exists())

    def request_stop(self, *_args) -> None:
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    # ---- start-up ------------------------------------------------------------------------------

    def _choose_cpus(self) -> None:
        """The CPUs this process was given decide where the engine runs (contract: the kubelet,
        not the operator, picks a Guaranteed Pod's exclusive CPUs)."""
        try:
            self.cpus = cpu.choose_cpus(self.plan.cores, os.sched_getaffinity(0))
        except cpu.CpuShortage as e:   # permanent: a plan that does not fit what this agent was given
            raise PlanError([Problem("cores", str(e))], "plan") from None
        self.view.engine_cpus = self.cpus.engine
        self.view.housekeeping_cpus = self.cpus.housekeeping
        self._say(self.cpus.describe(self.plan.cores))

    def observed(self) -> dict:
        """status.observed: where this agent actually runs, for the operator to compare with its
        ledger. One dict for the agent's life (the status reporter sends it with every report), so
        what is learnt later (flow steering, after tuning) reaches the next report."""
        self._observed.update({"node": self.options.node_name, "podName": self.options.pod_name,
                               "cores": list(self.cpus.engine), "housekeepingCores": list(self.cpus.housekeeping),
                               "metricsPort": self._metrics_port})
        return self._observed

    def _start_metrics(self) -> None:
        try:
            self._server, self._metrics_port = start_server(self.view, self.plan.metrics_address,
                                                            self.plan.metrics_port)
        except OSError as e:
            holder = ports.describe_listener(self.plan.metrics_port) if self.plan.metrics_port else None
            raise AgentError(f"cannot serve metrics on {self.plan.metrics_address}:{self.plan.metrics_port} "
                             f"({e.strerror})" + (f": the port is held by {holder}" if holder else "")
                             + "; the operator gives each agent of a node its own port (plan metrics.port): "
                             "stop the holder, or set metrics.port to a free port (0: any, published in "
                             "status.observed.metricsPort)") from None
        self._say(f"metrics on http://{self.plan.metrics_address}:{self._metrics_port}/metrics")

    def _start_status(self) -> None:
        ref = self.plan.feed_handler
        if ref is None:
            return
        from .status import StatusReporter, custom_objects_api
        try:
            api = custom_objects_api(self.options.kubeconfig)
        except Exception as e:   # kubernetes.config raises its own ConfigException, among others
            raise AgentError(f"the plan names FeedHandler {ref.namespace}/{ref.name} but no Kubernetes "
                             f"credentials were found ({e}); run in a Pod, or pass --kubeconfig") from None
        self.reporter = StatusReporter(ref, api, self.plan.status_interval_seconds, observed=self.observed(),
                                       books=self.plan.books.enabled)
        self._say(f"reporting status to FeedHandler {ref.namespace}/{ref.name} "
                  f"every {self.plan.status_interval_seconds:g} s")

    def _tune(self) -> None:
        self._tuner = HostTuner(self.plan, self.journal, self.cpus, self.node, self.options.root,
                                self.options.irq_dir)
        self.tuning = self._tuner.apply()
        self._observed["flowSteering"] = self.tuning.flow_steering
        for note in self.tuning.notes:
            self._say(f"tuned: {note}")
        for warning in self.tuning.warnings:
            self._say(f"note: {warning}")
        for problem in self.tuning.problems:
            self._say(f"NOT tuned: {problem}")
        self.drift = DriftChecker(self.tuning.watched, self.plan.restore_drift)
        self.view.drifted = dict(self.drift.drifted)
        self.view.drift_events = dict(self.drift.events)

    def _start_engine(self) -> None:
        # The engine joins the interface's shared steering program; whatever happens to the engine,
        # the agent releases what it may leave there (never another live engine's part).
        self._steering = SteeringQueue(self.plan.interface, self.plan.queue, self.options.bpffs_root)
        self.journal.record(self._steering, "released", "engine")
        self.supervisor = Supervisor(
            self.engine_command(), self.state.file("engine.log"),
            before_start=self._before_engine_start, after_exit=self._after_engine_exit,
            backoff_initial=self.options.backoff_initial,
            child_cpus=set(self.cpus.housekeeping) | {self.cpus.poll_core},
            pid_path=self.state.file("engine.pid"))
        self.supervisor.start()
        self.state.write_runtime({"pid": os.getpid(), "feed": self.plan.feed,
                                  "metrics": f"{self.plan.metrics_address}:{self._metrics_port}",
                                  "metrics_port": self._metrics_port, "journal": self.journal.path,
                                  "stats": self.state.stats_path, "engine_log": self.state.file("engine.log")})

    def engine_command(self) -> list[str]:
        p = self.plan
        cmd = [*self.options.engine_command, "run", "--iface", p.interface, "--queue", str(p.queue),
               "--bpffs-root", self.options.bpffs_root]
        for line in p.lines:
            cmd += ["--line", line.engine_arg]
        cmd += ["--mode", p.xdp_mode, "--zero-copy", p.zero_copy, "--core", str(self.cpus.poll_core),
                "--stats-json", self.state.stats_path, "--stats-interval", str(self.options.stats_interval),
                "--hugepages" if self.tuning and self.tuning.hugepages else "--no-hugepages",
                "--busy-poll", "on" if p.busy_poll.enabled else "off",
                "--busy-poll-usec", str(p.busy_poll.usec), "--busy-poll-budget", str(p.busy_poll.budget),
                "--rt-priority", str(p.busy_poll.rt_priority), "--quiet"]
        if p.exchange_timezone:
            cmd += ["--exchange-tz", p.exchange_timezone]
        return cmd + books_arguments(p) + rerequest_args(p.rerequest)

    def _before_engine_start(self) -> None:
        # Stats from an earlier run must never be read as this run's.
        try:
            os.unlink(self.state.stats_path)
        except FileNotFoundError:
            pass

    def _after_engine_exit(self, exit: Exit) -> None:
        """The engine is gone: release what it may have left in the steering program (SIGKILL, crash)."""
        try:
            self._steering.write("released")
        except OSError as e:
            log.error("cannot release queue %d of %s's steering program: %s", self.plan.queue,
                      self.plan.interface, e)
        if not self.stop_requested.is_set():
            self._say(exit.description)

    # ---- running -------------------------------------------------------------------------------

    def _loop(self) -> None:
        deadline = time.monotonic() + self.options.duration if self.options.duration else None
        next_drift = time.monotonic() + self.options.drift_interval
        next_print = time.monotonic() + 1.0
        while not self.stop_requested.wait(0.25):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if self.supervisor.state is State.FAILED:
                # Say why where people look (the log, the FeedHandler's status) before leaving.
                failed = conditions.evaluate(self._observation(now))
                self._say_condition_changes(failed)
                if self.reporter is not None:
                    self.reporter.maybe_report(failed, self._stats, force=True)
                self._say(f"giving up: {self.supervisor.last_exit.description}")
                break
            self._observe(now)
            if now >= next_drift:
                next_drift = now + self.options.drift_interval
                self.drift.check()
                self.view.drift_events = dict(self.drift.events)
                self.view.drifted = dict(self.drift.drifted)
            found = conditions.evaluate(self._observation(now))
            self._say_condition_changes(found)
            if self.reporter is not None:
                self.reporter.maybe_report(found, self._stats)
            if now >= next_print:
                next_print += 1.0
                if not self.options.quiet:
                    self._say(self.summary_line())

    def _observe(self, now: float) -> None:
        stats = read_stats(self.state.stats_path)
        self.latency_window.observe(now, stats)
        if stats is not None:
            stats["recent_latency"] = self.latency_window.summary()   # read by status and SLO
            if self.plan.stream_dir is not None:
                stats["stream_dir"] = self.plan.stream_dir             # status.snapshot.books.stream
        self._stats = stats
        self.view.stats = stats
        self.view.engine_up = self.supervisor.pid is not None
        self.view.engine_restarts = self.supervisor.restarts
        if self._runs.observe(stats):
            self._last_gaps = 0  # a restarted engine counts from zero again
        gaps = stats.get("gaps", 0) if stats else self._last_gaps
        if gaps > self._last_gaps:
            self._last_gap_at = now
        self._last_gaps = gaps

    def _observation(self, now: float) -> Observation:
        return Observation(
            plan=self.plan, tuning=self.tuning, drift_messages=list(self.drift.history),
            drift_outstanding=list(self.drift.outstanding.values()),
            engine_state=self.supervisor.state, last_exit=self.supervisor.last_exit,
            stats=self._stats, packet_age_s=packet_age(self._stats), last_gap_at=self._last_gap_at, now=now,
            stats_age_s=None if self._stats is None else max(0.0, time.time() - self._stats.get("time", 0)))

    def summary_line(self) -> str:
        s = self._stats
        if s is None:
            return f"{self.plan.feed}: engine {self.supervisor.state.value.lower()}, no stats yet"
        rate = s.get("rate") or {}
        lat = s.get("latency") or {}
        e2e, k2e = lat.get("exchange_to_engine") or {}, lat.get("kernel_to_engine") or {}
        drift = sum(self.drift.events.values())
        return (f"{self.plan.feed}: {rate.get('messages_per_s', 0):>10,.0f} msg/s "
                f"{rate.get('packets_per_s', 0):>8,.0f} pkt/s | msgs {s.get('messages', 0):,} "
                f"gaps {s.get('gaps', 0)} (missing {s.get('missing', 0)}, recovered {s.get('recovered', 0)}) "
                f"dup {s.get('duplicates', 0):,} malformed {s.get('malformed', 0)} | "
                f"exch->eng p50/p99 {e2e.get('p50', 0) / 1e3:.1f}/{e2e.get('p99', 0) / 1e3:.1f} us "
                f"kern->eng p99 {k2e.get('p99', 0) / 1e3:.1f} us | XDP {s.get('xdp_mode')} "
                f"{'zc' if s.get('zero_copy') else 'copy'}{' hugepages' if s.get('hugepages') else ''} | "
                f"restarts {self.supervisor.restarts} drift {drift}")

    def _say_condition_changes(self, found: list[Condition]) -> None:
        for c in found:
            if self._last_conditions.get(c.type) != (c.status, c.reason):
                self._last_conditions[c.type] = (c.status, c.reason)
                self._say(f"{c.type}={c.status} ({c.reason}): {c.message}")

    # ---- the end -------------------------------------------------------------------------------

    def _teardown(self) -> int:
        self.stop_requested.set()   # from here on an engine exit is expected, not news
        if self.supervisor is not None:
            self.supervisor.stop()
            self.view.engine_up = False
            self._retire_stream()
        if self._tuner is not None:
            self._tuner.release()
        code = EXIT_OK
        if self.journal is not None and self.journal.exists():
            results = self.journal.restore_all()
            failed = [r for r in results if not r.ok]
            for r in failed:
                self._say(f"NOT restored: {r.entry.setting.label} (wanted {r.entry.previous}): {r.error}")
            self._say(f"restored {len(results) - len(failed)} of {len(results)} host setting(s)")
            code = EXIT_RESTORE_FAILED if failed else EXIT_OK
        if code == EXIT_OK:
            self.node.unregister()   # holds nothing any more; else a later prune or `restore` releases
        if self.reporter is not None and self.supervisor is not None:
            # One last report (EngineReady=False, Stopped), whatever the interval.
            self.reporter.maybe_report(conditions.evaluate(self._observation(time.monotonic())), self._stats,
                                       force=True)
        if self._server is not None:
            self._server.shutdown()
        return code

    def _retire_stream(self) -> None:
        """No engine will follow this one here: end the stream for its readers, free its memory."""
        if self.plan.stream_dir is None:
            return
        try:
            removed = stream.retire(self.plan.stream_dir)
        except OSError as e:
            self._say(f"NOT removed: the book stream in {self.plan.stream_dir}: {e}")
            return
        if removed:
            self._say(f"book stream in {self.plan.stream_dir} ended and removed ({', '.join(removed)})")

    def _say(self, text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", file=self.out, flush=True)


def plan_identity(plan: Plan) -> str:
    """Who holds shared settings in the node account: the FeedHandler's uid, or in local mode the
    feed and where it runs."""
    if plan.feed_handler is not None and plan.feed_handler.uid:
        return plan.feed_handler.uid
    return f"{plan.feed}@{plan.interface}.q{plan.queue}"


def books_arguments(plan: Plan) -> list[str]:
    """The engine's flags for the plan's books and their stream (none while books are off)."""
    books = plan.books
    if not books.enabled:
        return []
    args = ["--books", "--feed", plan.feed, "--stream-root", plan.stream_root,
            "--book-depth", str(books.depth), "--book-max-orders", str(books.max_orders),
            "--book-max-instruments", str(books.max_instruments)]
    if books.symbols:
        args += ["--book-symbols", ",".join(books.symbols)]
    return args


def read_stats(path: str) -> dict | None:
    """The engine's latest stats, or None before its first write. The engine replaces the file
    atomically (write + rename), so a read sees a whole document or the previous one."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def packet_age(stats: dict | None) -> float | None:
    """Seconds since the last packet, now: the engine's age at its write plus the time since."""
    if stats is None or stats.get("last_packet_age_s") is None:
        return None
    return stats["last_packet_age_s"] + max(0.0, time.time() - stats.get("time", time.time()))
