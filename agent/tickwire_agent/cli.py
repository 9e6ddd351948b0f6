"""tickwire-agent: run a plan, print an example plan, check one, or restore a crashed agent's host.

    tickwire-agent run --plan FILE | --plan-env VAR [--state-dir DIR] [--irq-dir DIR] [--kubeconfig FILE] [--quiet]
                       [--node-state-dir DIR] [--bpffs-root DIR]     (shared by every agent of the node)
    tickwire-agent plan --example        (JSON on stdout, a field reference on stderr)
    tickwire-agent plan --check FILE
    tickwire-agent restore --state-dir DIR

Exit status: 0 clean, 2 a plan that is invalid or does not fit this host (nothing was changed),
3 the engine rejected its configuration (host restored), 4 some host setting could not be
restored (the journal keeps it: run `restore` again), 1 anything else.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys

from tickwire_engine.config import DEFAULT_BPFFS_ROOT

from . import example, plan as plan_module
from .agent import (EXIT_BAD_PLAN, EXIT_ERROR, EXIT_OK, EXIT_RESTORE_FAILED, Agent, AgentError, Options,
                    restore_leftovers)
from .journal import Journal
from .statedir import DEFAULT_ROOT, StateDir, StateDirBusy
from .tuning.shared import DEFAULT_NODE_STATE_DIR, NodeStateBusy


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickwire-agent", description="tickwire node agent")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="tune the host, run the engine, report, restore on exit")
    source = run.add_mutually_exclusive_group(required=True)
    source.add_argument("--plan", metavar="FILE", help="the plan, a JSON file")
    source.add_argument("--plan-env", metavar="VAR", help="read the plan's JSON from this environment "
                        "variable (in a Pod: TICKWIRE_PLAN)")
    run.add_argument("--state-dir", help=f"journal, stats and lock (default {DEFAULT_ROOT}/<feed>); in a Pod, a "
                     "hostPath, so that the journal outlives the container and the Pod")
    run.add_argument("--remove-state-on-clean-exit", action="store_true",
                     help="once the host is fully restored, delete the state directory's files (the Pod "
                     "does: its hostPath would otherwise keep them until the node reboots)")
    run.add_argument("--node-state-dir", default=None,
                     help=f"node-wide lock and account of the settings agents share: hugepages, device knobs "
                     f"(default: the plan's nodeStateDir, else {DEFAULT_NODE_STATE_DIR}; in a Pod, a hostPath "
                     "at the same path)")
    run.add_argument("--bpffs-root", default=DEFAULT_BPFFS_ROOT,
                     help="bpffs directory where each interface's shared steering program is pinned; every "
                     "engine of the node must use the same (default %(default)s; in a Pod, the host's "
                     "/sys/fs/bpf mounted at the same path)")
    run.add_argument("--irq-dir", default="/proc/irq", help="the host's /proc/irq, written for irqAffinity (in a "
                     "Pod: where it is mounted, since a container's own /proc/irq is read-only)")
    run.add_argument("--kubeconfig", help="for status reports outside a Pod (default: $KUBECONFIG)")
    run.add_argument("--duration", type=float, metavar="SECONDS", help="stop after this long")
    run.add_argument("--quiet", action="store_true", help="no per-second summary line")
    run.add_argument("--engine-command", default=None, metavar="CMD",
                     help="how to start the engine (default: this Python's `-m tickwire_engine.cli`)")
    run.add_argument("--verbose", action="store_true", help="debug logging")

    plan = sub.add_parser("plan", help="print an example plan, or check one")
    what = plan.add_mutually_exclusive_group(required=True)
    what.add_argument("--example", action="store_true", help="JSON on stdout, field reference on stderr")
    what.add_argument("--check", metavar="FILE", help="validate a plan file and say what is wrong")

    restore = sub.add_parser("restore", help="restore host settings a crashed agent left changed")
    restore.add_argument("--state-dir", required=True, help="the crashed agent's state directory")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "plan":
        return plan_command(args)
    if args.command == "restore":
        return restore_command(args)
    return run_command(args)


def plan_command(args) -> int:
    if args.example:
        sys.stdout.write(example.example_json())
        sys.stderr.write(example.field_reference())
        return EXIT_OK
    try:
        checked = plan_module.load_file(args.check)
    except plan_module.PlanError as e:
        print(e, file=sys.stderr)
        return EXIT_BAD_PLAN
    print(f"{args.check}: a valid plan for feed {checked.feed!r} on {checked.interface} queue {checked.queue}")
    return EXIT_OK


def restore_command(args) -> int:
    state = StateDir(args.state_dir)
    try:
        state.lock()
    except StateDirBusy as e:
        print(f"tickwire-agent: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        results = restore_leftovers(state, Journal(state.path), sys.stdout)
    finally:
        state.unlock()
    if not results:
        print(f"nothing to restore in {state.path}")
    return EXIT_RESTORE_FAILED if any(not r.ok for r in results) else EXIT_OK


def run_command(args) -> int:
    try:
        plan = plan_module.load_file(args.plan) if args.plan else plan_module.load_env(args.plan_env)
    except plan_module.PlanError as e:
        print(f"tickwire-agent: {e}", file=sys.stderr)
        return EXIT_BAD_PLAN
    options = Options(state_dir=args.state_dir or StateDir.for_feed(plan.feed).path, irq_dir=args.irq_dir,
                      kubeconfig=args.kubeconfig, quiet=args.quiet, duration=args.duration,
                      # the Pod sets these through the downward API; reported in status.observed
                      node_name=os.environ.get("TICKWIRE_NODE_NAME", ""),
                      pod_name=os.environ.get("TICKWIRE_POD_NAME", ""),
                      remove_state_on_clean_exit=args.remove_state_on_clean_exit,
                      node_state_dir=args.node_state_dir or plan.node_state_dir or DEFAULT_NODE_STATE_DIR,
                      bpffs_root=args.bpffs_root)
    if args.engine_command:
        options.engine_command = shlex.split(args.engine_command)
    agent = Agent(plan, options)
    agent.install_signal_handlers()
    try:
        return agent.run()
    except plan_module.PlanError as e:
        print(f"tickwire-agent: {e}", file=sys.stderr)
        return EXIT_BAD_PLAN
    except (AgentError, StateDirBusy, NodeStateBusy) as e:
        print(f"tickwire-agent: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
