"""The publisher's packets (bench/template.py): valid MoldUDP64, every ITCH message well formed."""
import pytest

from bench.template import make_template
from tickwire_feed import itch, moldudp64


def test_packets_are_valid_and_carry_several_messages_of_a_realistic_mix(tmp_path):
    template = make_template(packets=2000, mean_per_packet=4)
    counts = [moldudp64.decode_packet(p).count for p in template.payloads]
    assert min(counts) == 1 and max(counts) == 7
    assert 3.7 < template.messages_per_packet < 4.3
    for payload in template.payloads:
        for message in moldudp64.decode_packet(payload).messages:
            assert len(message) == itch.LENGTHS[chr(message[0])]
    by_type = template.by_type()
    assert by_type.most_common(1)[0][0] in "AD" and len(by_type) >= 15
    path = tmp_path / "t.bin"
    template.write(str(path))
    assert path.stat().st_size == sum(2 + len(p) for p in template.payloads)


def test_same_seed_same_packets():
    assert make_template(100, seed=3).payloads == make_template(100, seed=3).payloads


@pytest.mark.parametrize("kwargs", [dict(packets=0), dict(packets=70000), dict(mean_per_packet=40)])
def test_sizes_the_publisher_cannot_take_are_refused(kwargs):
    with pytest.raises(ValueError):
        make_template(**kwargs)
