"""`python -m tickwire_operator` (or `tickwire-operator`): run the operator cluster-wide against the
in-cluster service account, or the current kubeconfig context outside a cluster."""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tickwire-operator", description=__doc__)
    parser.add_argument("--liveness", default=os.environ.get("TICKWIRE_OPERATOR_LIVENESS",
                                                             "http://0.0.0.0:8081/healthz"),
                        help="where kopf serves its liveness probe (empty: nowhere)")
    parser.add_argument("--peering", default=os.environ.get("TICKWIRE_OPERATOR_PEERING", "tickwire-operator"),
                        help="ClusterKopfPeering name shared by replicas; only one of them acts at a time")
    parser.add_argument("--priority", type=int,
                        default=int(os.environ.get("TICKWIRE_OPERATOR_PRIORITY", random.randint(1, 2**30))),
                        help="peering priority: the highest live replica acts, the others wait")
    parser.add_argument("--standalone", action="store_true",
                        help="ignore peering (a single replica, e.g. on a laptop)")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    kopf.configure(verbose=args.verbose)
    if not args.verbose:
        # kopf logs every timer tick and event at INFO: a storm with hundreds of FeedHandlers.
        # The operator logs its own decisions (placed, replaced, released) under tickwire.operator.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # Naming a peering makes it mandatory in kopf: a replica waits until the peering object exists.
    peering = {"standalone": True} if args.standalone else {"peering_name": args.peering}
    kopf.run(clusterwide=True, priority=args.priority, liveness_endpoint=args.liveness or None, **peering)
    return 0


if __name__ == "__main__":
    sys.exit(main())
