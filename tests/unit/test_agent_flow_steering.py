"""ntuple flow steering (tuning/ethtool_rxnfc.py, tuning/flow_steering.py).

No NIC on these machines has ntuple filters (veth and virtio_net have no rx classification; the
"none" path on a real veth is tested in tests/netns/test_agent_sharing.py). So:
- the ioctl encoding is checked byte for byte against the kernel's own header, compiled here
  with the C compiler (offsetof/sizeof of <linux/ethtool.h>);
- the install/remove logic runs against `DriverStandIn`, a stand-in for a driver's rule table
  that decodes every request with the kernel layout and refuses what a real driver refuses
  (an occupied or out-of-range location, a special location the driver does not handle, a
  delete or get of an empty slot). It is a stand-in because nothing real can run here.
"""
from __future__ import annotations

import errno
import json
import shutil
import socket
import struct
import subprocess

import pytest

from tickwire_agent.journal import Journal
from tickwire_agent.plan import PlanError, loads
from tickwire_agent.tuning import ethtool_rxnfc as rx
from tickwire_agent.tuning import flow_steering
from tickwire_agent.tuning.shared import NodeState

LAYOUT_C = r"""
#include <stdio.h>
#include <stddef.h>
#include <linux/ethtool.h>
#include <linux/sockios.h>
#define P(name, value) printf("\"%s\": %lu,\n", name, (unsigned long)(value))
int main(void) {
    printf("{\n");
    P("fs_size", sizeof(struct ethtool_rx_flow_spec));
    P("fs_flow_type", offsetof(struct ethtool_rx_flow_spec, flow_type));
    P("fs_h_u", offsetof(struct ethtool_rx_flow_spec, h_u));
    P("fs_h_ext", offsetof(struct ethtool_rx_flow_spec, h_ext));
    P("fs_m_u", offsetof(struct ethtool_rx_flow_spec, m_u));
    P("fs_m_ext", offsetof(struct ethtool_rx_flow_spec, m_ext));
    P("fs_ring_cookie", offsetof(struct ethtool_rx_flow_spec, ring_cookie));
    P("fs_location", offsetof(struct ethtool_rx_flow_spec, location));
    P("union_size", sizeof(union ethtool_flow_union));
    P("ext_size", sizeof(struct ethtool_flow_ext));
    P("ext_vlan_etype", offsetof(struct ethtool_flow_ext, vlan_etype));
    P("ext_vlan_tci", offsetof(struct ethtool_flow_ext, vlan_tci));
    P("udp_ip4src", offsetof(struct ethtool_tcpip4_spec, ip4src));
    P("udp_ip4dst", offsetof(struct ethtool_tcpip4_spec, ip4dst));
    P("udp_psrc", offsetof(struct ethtool_tcpip4_spec, psrc));
    P("udp_pdst", offsetof(struct ethtool_tcpip4_spec, pdst));
    P("udp_tos", offsetof(struct ethtool_tcpip4_spec, tos));
    P("rxnfc_size", sizeof(struct ethtool_rxnfc));
    P("rxnfc_data", offsetof(struct ethtool_rxnfc, data));
    P("rxnfc_fs", offsetof(struct ethtool_rxnfc, fs));
    P("rxnfc_rule_cnt", offsetof(struct ethtool_rxnfc, rule_cnt));
    P("rxnfc_rule_locs", offsetof(struct ethtool_rxnfc, rule_locs));
    P("drvinfo_size", sizeof(struct ethtool_drvinfo));
    P("drvinfo_driver", offsetof(struct ethtool_drvinfo, driver));
    P("SIOCETHTOOL", SIOCETHTOOL);
    P("GDRVINFO", ETHTOOL_GDRVINFO);
    P("GRXCLSRLCNT", ETHTOOL_GRXCLSRLCNT);
    P("GRXCLSRULE", ETHTOOL_GRXCLSRULE);
    P("GRXCLSRLALL", ETHTOOL_GRXCLSRLALL);
    P("SRXCLSRLDEL", ETHTOOL_SRXCLSRLDEL);
    P("SRXCLSRLINS", ETHTOOL_SRXCLSRLINS);
    P("UDP_V4_FLOW", UDP_V4_FLOW);
    P("FLOW_EXT", FLOW_EXT);
    P("RX_CLS_LOC_SPECIAL", RX_CLS_LOC_SPECIAL);
    P("RX_CLS_LOC_ANY", RX_CLS_LOC_ANY);
    printf("\"end\": 0}\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed to read the kernel's struct layout (the project builds C anyway)"
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text(LAYOUT_C)
    subprocess.run([cc, "-I/usr/include/x86_64-linux-gnu", "-o", str(d / "layout"), str(d / "layout.c")],
                   check=True)
    return json.loads(subprocess.run([str(d / "layout")], check=True, capture_output=True, text=True).stdout)


def test_the_encoding_matches_the_kernel_header(kernel):
    assert rx.FLOW_SPEC.size == kernel["fs_size"] == 168
    assert rx.RXNFC.size == kernel["rxnfc_size"] and rx.RULE_LOCS == kernel["rxnfc_rule_locs"]
    assert rx.DRVINFO_SIZE == kernel["drvinfo_size"] and kernel["drvinfo_driver"] == 4
    assert kernel["union_size"] == 52 and kernel["ext_size"] == rx.FLOW_EXT_SPEC.size
    for ours, theirs in [(rx.SIOCETHTOOL, "SIOCETHTOOL"), (rx.ETHTOOL_GDRVINFO, "GDRVINFO"),
                         (rx.ETHTOOL_GRXCLSRLCNT, "GRXCLSRLCNT"), (rx.ETHTOOL_GRXCLSRULE, "GRXCLSRULE"),
                         (rx.ETHTOOL_GRXCLSRLALL, "GRXCLSRLALL"), (rx.ETHTOOL_SRXCLSRLDEL, "SRXCLSRLDEL"),
                         (rx.ETHTOOL_SRXCLSRLINS, "SRXCLSRLINS"), (rx.UDP_V4_FLOW, "UDP_V4_FLOW"),
                         (rx.FLOW_EXT, "FLOW_EXT"), (rx.RX_CLS_LOC_SPECIAL, "RX_CLS_LOC_SPECIAL"),
                         (rx.RX_CLS_LOC_ANY, "RX_CLS_LOC_ANY")]:
        assert ours == kernel[theirs], theirs

    rule = rx.Rule("239.7.1.2", 26400, queue=3, source="198.18.0.9", vlan=101)
    fs = rule.flow_spec(location=1021)
    assert len(fs) == kernel["fs_size"]
    u32 = lambda off: struct.unpack_from("=I", fs, off)[0]     # noqa: E731 (host order, as the kernel)
    be16 = lambda off: struct.unpack_from("!H", fs, off)[0]    # noqa: E731
    assert u32(kernel["fs_flow_type"]) == kernel["UDP_V4_FLOW"] | kernel["FLOW_EXT"]
    h, m = kernel["fs_h_u"], kernel["fs_m_u"]
    assert fs[h + kernel["udp_ip4dst"]:h + kernel["udp_ip4dst"] + 4] == socket.inet_aton("239.7.1.2")
    assert fs[h + kernel["udp_ip4src"]:h + kernel["udp_ip4src"] + 4] == socket.inet_aton("198.18.0.9")
    assert be16(h + kernel["udp_pdst"]) == 26400 and be16(h + kernel["udp_psrc"]) == 0
    # masks: a set bit is compared
    assert fs[m + kernel["udp_ip4dst"]:m + kernel["udp_ip4dst"] + 4] == b"\xff" * 4
    assert fs[m + kernel["udp_ip4src"]:m + kernel["udp_ip4src"] + 4] == b"\xff" * 4
    assert be16(m + kernel["udp_pdst"]) == 0xFFFF and be16(m + kernel["udp_psrc"]) == 0
    assert fs[m + kernel["udp_tos"]] == 0
    assert be16(kernel["fs_h_ext"] + kernel["ext_vlan_tci"]) == 101
    assert be16(kernel["fs_m_ext"] + kernel["ext_vlan_tci"]) == 0x0FFF
    assert struct.unpack_from("=Q", fs, kernel["fs_ring_cookie"])[0] == 3
    assert u32(kernel["fs_location"]) == 1021

    request = rx.rxnfc(rx.ETHTOOL_SRXCLSRLINS, fs, data=7, rule_cnt=2)
    assert struct.unpack_from("=I", request, 0)[0] == kernel["SRXCLSRLINS"]
    assert struct.unpack_from("=Q", request, kernel["rxnfc_data"])[0] == 7
    assert request[kernel["rxnfc_fs"]:kernel["rxnfc_fs"] + 168] == fs
    assert struct.unpack_from("=I", request, kernel["rxnfc_rule_cnt"])[0] == 2


def test_any_source_and_no_vlan_compare_only_group_and_port():
    fs = rx.Rule("239.1.1.1", 30001, queue=0).flow_spec(5)
    flow_type, h_u, h_ext, m_u, m_ext, cookie, location = rx.FLOW_SPEC.unpack(fs)
    assert flow_type == rx.UDP_V4_FLOW and m_u[:4] == b"\0" * 4 and m_ext == b"\0" * 20
    assert rx.Rule.from_flow_spec(fs) == (rx.Rule("239.1.1.1", 30001, 0), 5)


class DriverStandIn:
    """A driver's ntuple table answering SIOCETHTOOL requests decoded with the kernel layout."""

    def __init__(self, size=8, driver_picks=False, refuse_after=None):
        self.size = size
        self.driver_picks = driver_picks
        self.refuse_after = refuse_after
        self.rules: dict[int, bytes] = {}
        self.inserts = 0

    def call(self, ifname, request):
        cmd = struct.unpack_from("=I", request)[0]
        if cmd == rx.ETHTOOL_GDRVINFO:
            return struct.pack("=I", cmd) + b"ixgbe".ljust(32, b"\0") + request[36:]
        _cmd, ft, data, fs, cnt = rx.RXNFC.unpack(request[:rx.RXNFC.size])
        location = rx.FLOW_SPEC.unpack(fs)[-1]
        if cmd == rx.ETHTOOL_GRXCLSRLCNT:
            flag = rx.RX_CLS_LOC_SPECIAL if self.driver_picks else 0
            return rx.RXNFC.pack(cmd, ft, self.size | flag, fs, len(self.rules))
        if cmd == rx.ETHTOOL_GRXCLSRLALL:
            if cnt < len(self.rules):
                raise OSError(errno.EMSGSIZE, "rule_cnt too small")
            if len(request) < rx.RULE_LOCS + 4 * cnt:
                raise OSError(errno.EFAULT, "Bad address")      # the kernel would write past the buffer
            locs = sorted(self.rules)
            reply = bytearray(request)
            reply[:rx.RXNFC.size] = rx.RXNFC.pack(cmd, ft, self.size, fs, len(locs))
            struct.pack_into(f"={len(locs)}I", reply, rx.RULE_LOCS, *locs)   # at offsetof(rule_locs)
            return bytes(reply)
        if cmd == rx.ETHTOOL_SRXCLSRLINS:
            if self.refuse_after is not None and self.inserts >= self.refuse_after:
                raise OSError(errno.EINVAL, "Invalid argument")
            if location == rx.RX_CLS_LOC_ANY:
                if not self.driver_picks:
                    raise OSError(errno.EINVAL, "special location not supported by this driver")
                location = min(set(range(self.size)) - set(self.rules))
            elif location >= self.size or location in self.rules:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.inserts += 1
            fs = fs[:160] + struct.pack("=I", location) + fs[164:]
            self.rules[location] = fs
            return rx.RXNFC.pack(cmd, ft, data, fs, cnt)
        if cmd == rx.ETHTOOL_GRXCLSRULE:
            if location not in self.rules:
                raise OSError(errno.ENOENT, "No such file or directory")
            return rx.RXNFC.pack(cmd, ft, data, self.rules[location], cnt)
        if cmd == rx.ETHTOOL_SRXCLSRLDEL:
            if location not in self.rules:
                raise OSError(errno.ENOENT, "No such file or directory")
            del self.rules[location]
            return request
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")


def a_plan(**changes):
    doc = {"apiVersion": "tickwire.dev/plan-v1", "feed": {"name": "f", "protocol": "moldudp64-itch50"},
           "interface": "eth9", "queue": 3, "cores": [1],
           "lines": [{"name": "A", "group": "239.7.1.1", "port": 26400},
                     {"name": "B", "group": "232.7.1.2", "port": 26401, "source": "198.18.0.9"}]}
    doc.update(changes)
    return loads(json.dumps(doc))


@pytest.fixture
def driver(monkeypatch):
    stand_in = DriverStandIn()
    monkeypatch.setattr(flow_steering, "table_for", lambda ifname: rx.RuleTable(ifname, stand_in))
    return stand_in


def node_for(tmp_path):
    node = NodeState(str(tmp_path / "node"))
    node.register("f")
    return node


@pytest.mark.parametrize("driver_picks", [False, True])
def test_one_rule_per_line_to_the_plans_queue_journaled_and_removed_by_restore(tmp_path, driver, driver_picks):
    driver.driver_picks = driver_picks
    driver.rules[7] = rx.Rule("239.9.9.9", 1, queue=0).flow_spec(7)       # someone else's rule
    journal = Journal(str(tmp_path))
    outcome = flow_steering.install(a_plan(), journal, node_for(tmp_path))
    assert outcome.mode == "ntuple" and len(outcome.rules) == 2 and 7 not in outcome.rules
    installed = {loc: rx.Rule.from_flow_spec(fs)[0] for loc, fs in driver.rules.items() if loc != 7}
    assert sorted(installed.values(), key=lambda r: r.port) == [
        rx.Rule("239.7.1.1", 26400, 3), rx.Rule("232.7.1.2", 26401, 3, source="198.18.0.9")]
    assert [e.setting.location for e in journal.pending()] == outcome.rules

    assert all(r.ok for r in journal.restore_all())
    assert list(driver.rules) == [7], "ours deleted, the other rule kept"


def test_restore_leaves_a_slot_that_now_holds_someone_elses_rule(tmp_path, driver):
    journal = Journal(str(tmp_path))
    outcome = flow_steering.install(a_plan(lines=[{"name": "A", "group": "239.7.1.1", "port": 26400}]),
                                    journal, node_for(tmp_path))
    location = outcome.rules[0]
    driver.rules[location] = rx.Rule("239.9.9.9", 1, queue=0).flow_spec(location)   # replaced meanwhile
    assert all(r.ok for r in journal.restore_all())
    assert location in driver.rules


def test_a_refused_rule_takes_back_the_ones_before_it(tmp_path, driver):
    driver.refuse_after = 1
    journal = Journal(str(tmp_path))
    with pytest.raises(flow_steering.NoFlowSteering, match="refused an ntuple rule"):
        flow_steering.install(a_plan(), journal, node_for(tmp_path))
    assert driver.rules == {} and journal.pending() == []


def test_a_nic_without_ntuple_filters_says_why(tmp_path, monkeypatch):
    class NoNtuple(DriverStandIn):
        def call(self, ifname, request):
            if struct.unpack_from("=I", request)[0] == rx.ETHTOOL_GDRVINFO:
                return struct.pack("=I", rx.ETHTOOL_GDRVINFO) + b"virtio_net".ljust(32, b"\0") + request[36:]
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    monkeypatch.setattr(flow_steering, "table_for", lambda ifname: rx.RuleTable(ifname, NoNtuple()))
    with pytest.raises(flow_steering.NoFlowSteering,
                       match=r"eth9 \(virtio_net\) has no ntuple flow steering .*Operation not supported"):
        flow_steering.install(a_plan(), Journal(str(tmp_path)), node_for(tmp_path))


def test_plan_flow_steering_and_node_state_dir():
    p = a_plan()
    assert (p.flow_steering, p.node_state_dir) == ("auto", None)
    p = a_plan(flowSteering="ntuple", nodeStateDir="/run/x/node")
    assert (p.flow_steering, p.node_state_dir) == ("ntuple", "/run/x/node")
    with pytest.raises(PlanError, match=r"flowSteering: is 'sometimes', not one of 'auto', 'ntuple', 'off'"):
        a_plan(flowSteering="sometimes")
