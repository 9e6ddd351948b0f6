"""The capability check before anything is touched, and its agreement with the Pod builder.
(That each capability is really needed is shown by the kernel: tests/netns/test_agent_privileges.py.)"""
import json
import resource

from tickwire_agent import example, privileges
from tickwire_agent.plan import from_document
from tickwire_operator import pod

ALL = sum(1 << bit for bit, _ in [*privileges.ALWAYS.values(), *privileges.REALTIME.values()])


def plan(rt_priority=0):
    doc = json.loads(example.example_json())
    doc.setdefault("busyPoll", {})["rtPriority"] = rt_priority
    return from_document(doc)


def missing(p, caps, memlock=8 << 20):
    return [pr.message.split()[3].rstrip(",") for pr in privileges.problems(p, caps, memlock)]


def test_the_pod_grants_exactly_what_the_agent_checks_for():
    assert {f"CAP_{c}" for c in pod.CAPABILITIES} == set(privileges.ALWAYS)
    assert {f"CAP_{pod.RT_CAPABILITY[0]}"} == set(privileges.REALTIME)


def test_each_missing_capability_is_named():
    for name, (bit, _) in privileges.ALWAYS.items():
        assert missing(plan(), ALL & ~(1 << bit)) == [name]
    assert missing(plan(), ALL) == []


def test_sys_nice_only_for_a_real_time_poll_thread():
    nice = 1 << privileges.REALTIME["CAP_SYS_NICE"][0]
    assert missing(plan(0), ALL & ~nice) == []
    assert missing(plan(10), ALL & ~nice) == ["CAP_SYS_NICE"]


def test_sys_admin_covers_bpf_and_perfmon_and_unlimited_memlock_needs_no_ipc_lock():
    bpf, perfmon, ipc_lock = (1 << privileges.ALWAYS[n][0] for n in ("CAP_BPF", "CAP_PERFMON", "CAP_IPC_LOCK"))
    assert missing(plan(), (ALL & ~bpf & ~perfmon) | 1 << privileges.CAP_SYS_ADMIN) == []
    assert missing(plan(), ALL & ~ipc_lock, memlock=resource.RLIM_INFINITY) == []
