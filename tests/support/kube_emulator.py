"""The Kubernetes emulator the tests run kopf and the agent against.

It moved into the product (tickwire_demo.kube_emulator) because `make demo-operator` runs the
operator against it too; this module keeps the old import path working for the tests.
"""
from tickwire_demo.kube_emulator import *  # noqa: F401,F403
from tickwire_demo.kube_emulator import (  # noqa: F401  (the names tests import, spelled out)
    FEEDHANDLER_CRD,
    KubeEmulator,
    enter_netns,
    load_yaml,
    merge_patch,
    netns_executor,
)
