"""Engine configuration (issue 11, defects 4 and 7): ring sizes checked with errors naming the field,
and the exchange zone defaulting to the feed's exchange in the engine config, CLI and agent plan."""
import copy

import pytest

from tickwire_agent import example, plan
from tickwire_engine import cli, config
from tickwire_engine.config import ConfigError, EngineConfig, Line

LINES = [Line.parse("A=239.1.1.1:5000")]


def test_default_rings_hold_a_2_ms_stall_at_1_mpps_with_libxdps_fill_ring():
    c = EngineConfig("lo", LINES)
    assert c.ring_size >= 2000 and c.frame_count >= 2 * c.ring_size
    c._validate_rings()


@pytest.mark.parametrize("fields, message", [
    ({"ring_size": 3000}, r"ring_size 3000 \(RX ring entries\): must be a power of two"),
    ({"ring_size": 4096, "frame_count": 4096}, r"frame_count 4096: .* at least twice ring_size \(8192\)"),
    ({"frame_count": 12288}, r"frame_count 12288: must be a power of two"),
    ({"batch_size": 5000}, r"batch_size 5000: must be 1..ring_size \(4096\)"),
])
def test_bad_rings_are_refused_naming_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        EngineConfig("lo", LINES, **fields).validate()


def test_the_cli_defaults_to_the_feeds_exchange_zone():
    args = cli.build_parser().parse_args(["run", "--iface", "lo", "--line", "A=239.1.1.1:5000"])
    c = cli.config_from_args(args)
    assert c.exchange_tz is None and c.exchange_midnights is None
    assert c.midnights()[1] == config.exchange_midnight_ns("America/New_York")
    assert (c.ring_size, c.frame_count) == (EngineConfig.ring_size, EngineConfig.frame_count)
    args = cli.build_parser().parse_args(["run", "--iface", "lo", "--line", "A=239.1.1.1:5000",
                                          "--exchange-midnights", "10,20"])
    assert cli.config_from_args(args).midnights() == [10, 20]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "--iface", "lo", "--line", "A=239.1.1.1:5000",
                                       "--exchange-midnights", "ten"])


def test_local_is_an_explicit_choice_and_unknown_zones_are_refused():
    assert config.exchange_midnight_ns("local") != config.exchange_midnight_ns("Asia/Tokyo")
    with pytest.raises(ConfigError, match="'Mars/Base' is unknown.*'local'"):
        EngineConfig("lo", LINES, exchange_tz="Mars/Base").midnights()


def test_the_plan_leaves_the_zone_to_the_feed_and_accepts_local():
    doc = copy.deepcopy(example.EXAMPLE)
    doc["exchangeTimezone"] = None
    assert plan.from_document(doc).exchange_timezone is None
    doc["exchangeTimezone"] = "local"
    assert plan.from_document(doc).exchange_timezone == "local"
    doc["exchangeTimezone"] = "Mars/Base"
    with pytest.raises(plan.PlanError, match=r"exchangeTimezone: 'Mars/Base' .*feed's exchange \(America/New_York\)"):
        plan.from_document(doc)


@pytest.mark.parametrize("spec, message", [
    ("A=239.1.1.1:5000,vlan=0", "vlan 0 is out of range 1-4094"),
    ("A=239.1.1.1:5000,vlan=4095", "vlan 4095 is out of range"),
    ("A=239.1.1.1:5000,vlan=ten", "vlan 'ten' is not a number"),
])
def test_a_bad_vlan_is_named(spec, message):
    with pytest.raises(ConfigError, match=message):
        Line.parse(spec)


def test_a_line_with_source_and_vlan_parses():
    line = Line.parse("B=232.1.1.1:26477@206.200.127.138,vlan=3001")
    assert (line.group, line.port, line.source, line.vlan) == ("232.1.1.1", 26477, "206.200.127.138", 3001)
    assert line.engine_arg == "B=232.1.1.1:26477@206.200.127.138,vlan=3001"
