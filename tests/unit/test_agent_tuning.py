"""Host tuning code against a temp dir laid out like sysfs/procfs.

veth (the tests' NIC) has no IRQ and the test machine one NUMA node, so IRQ discovery, IRQ
affinity and per-node hugepage pools cannot be exercised on real files there: these tests feed
them files shaped like a multi-queue NIC's. Real sysfs, ethtool channels and hugepages are
covered in tests/netns/test_agent_netns.py.
"""
import os
import socket
import struct

from tickwire_agent.journal import Journal
from tickwire_agent.tuning import cpu, hugepages, multicast, nic
from tickwire_agent.tuning.shared import NodeState

INTERRUPTS = """\
            CPU0       CPU1
  24:          0          0   PCI-MSI 1048576-edge      eth0
  25:        120          0   PCI-MSI 1048577-edge      eth0-TxRx-0
  26:          0        330   PCI-MSI 1048578-edge      eth0-TxRx-1
  27:          0          0   PCI-MSI 1048579-edge      eth0-TxRx-11
  30:          0          0   PCI-MSI 2048001-edge      virtio3-input.2
  31:          0          0   PCI-MSI 2048002-edge      virtio3-output.2
  40:          0          0   PCI-MSI 3000000-edge      mlx5_comp4@pci:0000:3b:00.0
 NMI:          0          0   Non-maskable interrupts
"""


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def test_cpulists_round_trip_in_the_kernels_form():
    assert cpu.parse_cpulist("0-2,5,7-8\n") == [0, 1, 2, 5, 7, 8]
    assert cpu.format_cpulist([8, 7, 5, 2, 1, 0]) == "0-2,5,7-8"
    assert cpu.format_cpulist([3]) == "3"


def test_queue_irq_found_by_the_drivers_naming(tmp_path):
    root = str(tmp_path)
    write(root, "proc/interrupts", INTERRUPTS)
    assert nic.find_queue_irq("eth0", 1, root) == 26
    assert nic.find_queue_irq("eth0", 11, root) == 27        # not confused with queue 1
    assert nic.find_queue_irq("eth0", 5, root) is None
    # virtio names vectors after the bus device, not the interface
    os.makedirs(tmp_path / "devices/virtio3")
    os.makedirs(tmp_path / "sys/class/net/ens4")
    os.symlink(tmp_path / "devices/virtio3", tmp_path / "sys/class/net/ens4/device")
    assert nic.find_queue_irq("ens4", 2, root) == 30            # input.2, never output.2
    assert nic.find_queue_irq("veth0", 0, root) is None


def test_irq_affinity_set_and_restored_through_the_journal(tmp_path):
    from tickwire_agent.plan import loads
    from tickwire_agent.tuning.cpu import choose_cpus
    from tickwire_agent.tuning.host import HostTuner, TuningReport
    from tickwire_agent import example
    import json
    root = str(tmp_path)
    write(root, "proc/interrupts", INTERRUPTS)
    path = write(root, "proc/irq/26/smp_affinity_list", "0-1\n")
    d = json.loads(example.example_json())
    d.update(interface="eth0", queue=1, irqAffinity=[0])
    journal = Journal(str(tmp_path))
    plan = loads(json.dumps(d))
    tuner = HostTuner(plan, journal, choose_cpus(plan.cores, range(8)), NodeState(str(tmp_path / "node")), root,
                      irq_dir=os.path.join(root, "proc/irq"))
    report = TuningReport()
    tuner._irq_affinity(report)
    assert report.irq == 26 and report.problems == []
    assert open(path).read() == "0"
    assert [w.setting.label for w in report.watched] == ["irq_affinity"]
    journal.restore_all()
    assert open(path).read() == "0-1"


def test_busy_poll_knobs_only_for_what_the_plan_sets(tmp_path):
    knobs = nic.busy_poll_knobs("eth0", 2, None, str(tmp_path))
    assert [(k.label, v) for k, v in knobs] == [("napi_defer_hard_irqs", "2")]
    assert knobs[0][0].path == str(tmp_path / "sys/class/net/eth0/napi_defer_hard_irqs")


def test_hugepages_pool_is_per_node_only_on_a_multi_node_host(tmp_path):
    root = str(tmp_path)
    os.makedirs(tmp_path / "sys/devices/system/node/node0")
    assert hugepages.pool_dir(0, root).endswith("sys/kernel/mm/hugepages/hugepages-2048kB")
    os.makedirs(tmp_path / "sys/devices/system/node/node1")
    assert hugepages.pool_dir(1, root).endswith("node/node1/hugepages/hugepages-2048kB")
    write(root, "sys/class/net/eth0/device/numa_node", "1\n")
    write(root, "sys/class/net/eth1/device/numa_node", "-1\n")
    assert hugepages.nic_numa_node("eth0", root) == 1
    assert hugepages.nic_numa_node("eth1", root) is None
    assert hugepages.nic_numa_node("veth0", root) is None


def test_a_partial_hugepage_grant_is_given_back_and_reported(tmp_path):
    # Files do not allocate pages: free_hugepages stays 0 whatever we write, as when the
    # kernel cannot find contiguous memory. The agent must give the pages back and say so.
    root = str(tmp_path)
    pool = write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "3\n")
    write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "0\n")
    journal = Journal(str(tmp_path))
    node = NodeState(str(tmp_path / "node"))
    node.register("feed-a")
    result = hugepages.reserve(4, None, journal, node, root, free_wait_s=0.1)
    assert not result.granted and "normal pages" in result.message
    assert open(pool).read().strip() == "3"
    assert journal.pending() == []
    assert node.read_account()["hugepages"] == {}, "the account holds nothing for pages given back"


def test_no_hugepages_wanted_touches_nothing(tmp_path):
    result = hugepages.reserve(0, None, Journal(str(tmp_path)), NodeState(str(tmp_path / "node")), str(tmp_path))
    assert not result.granted and not os.listdir(tmp_path)


def test_group_req_layout_matches_the_kernel_struct():
    req = multicast.group_source_req(7, "232.1.1.1", "198.18.0.1")
    assert len(multicast.group_req(7, "239.1.1.1")) == 136 and len(req) == 264
    assert struct.unpack_from("=I", req)[0] == 7
    assert struct.unpack_from("=H", req, 8)[0] == socket.AF_INET
    assert req[12:16] == socket.inet_aton("232.1.1.1")
    assert req[136 + 4:136 + 8] == socket.inet_aton("198.18.0.1")


def test_kernel_membership_tables_parse(tmp_path):
    root = str(tmp_path)
    little = int.from_bytes(socket.inet_aton("239.1.1.1"), "little")
    write(root, "proc/net/igmp",
          "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
          "1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n"
          f"5\ttwn1      :     2      V3\n\t\t\t\t{little:08X}     1 0:00000000\t\t0\n"
          "\t\t\t\t010000E0     1 0:00000000\t\t0\n")
    write(root, "proc/net/mcfilter",
          "Idx Device        MCA        SRC    INC    EXC\n"
          "  5 twn123 0xe8010101 0xc6120001     1      0\n"      # the kernel cuts names to 6
          "  6 twn123 0xe8010102 0xc6120001     1      0\n")    # another interface, same cut name
    write(root, "sys/class/net/twn1234/ifindex", "5\n")
    assert multicast.kernel_groups("twn1", root) == {"239.1.1.1", "224.0.0.1"}
    assert multicast.kernel_sources("twn1234", root) == {("232.1.1.1", "198.18.0.1")}


def test_long_device_names_in_the_igmp_table(tmp_path):
    """The kernel prints the name with "%-10s:", so from 10 characters on the colon follows it
    directly (an agent on enp129s0f1 reported its joins as missing)."""
    root = str(tmp_path)
    little = int.from_bytes(socket.inet_aton("239.1.1.1"), "little")
    write(root, "proc/net/igmp",
          "Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n"
          f"5\tenp129s0f1:     1      V3\n\t\t\t\t{little:08X}     1 0:00000000\t\t0\n"
          f"6\tfeed-nic-15char:     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n")
    assert multicast.kernel_groups("enp129s0f1", root) == {"239.1.1.1"}
    assert multicast.kernel_groups("feed-nic-15char", root) == {"224.0.0.1"}


def test_pages_a_dying_engine_still_holds_are_not_taken_for_the_pool(tmp_path):
    """After the pool is shrunk below the pages in use, the kernel counts those in nr_hugepages as
    surplus until they are freed (an AF_XDP UMEM is freed in the background after its process
    dies). The pool is what stays: journaling nr_hugepages as "previous" there leaked the pages."""
    from tickwire_agent.tuning.settings import HugepagesSetting
    root = str(tmp_path)
    write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages", "4\n")
    write(root, "sys/kernel/mm/hugepages/hugepages-2048kB/surplus_hugepages", "4\n")
    pool = HugepagesSetting(str(tmp_path / "sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"), "hugepages")
    assert pool.read() == 0
