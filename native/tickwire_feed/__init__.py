"""tickwire-feed: the exchange side for tests, benchmarks and demos.

Generates NASDAQ TotalView-ITCH 5.0 messages framed in MoldUDP64 and sends them on one or two
multicast lines (A/B) with reproducible faults (gaps, loss, duplicates, reordering, malformed
messages), or replays captured packets. Modules, each with one job:

    itch        message formats of every ITCH 5.0 type: encode, decode, lengths
    market      plausible message contents (stocks, an order book) and type mixes
    moldudp64   packet framing: data, heartbeat, end of session
    schedule    the plan: sequence numbers, packets, injected faults (seeded)
    ledger      what was sent, and what a correct receiver must count (the summary)
    pacing      rate pacing (sleep, then spin)
    net         multicast endpoints and the sending socket
    clock       the exchange midnight ITCH timestamps count from
    publish     the sender: publish(PublishConfig) -> summary dict
    pcap        UDP datagrams from pcap/pcapng captures
    replay      resend captured MoldUDP64 payloads
    pool        prepared packets for the fast senders
    blast       the in-kernel generator (XDP live frames) and its exact ledger
    cli         the `tickwire-feed` command
"""
