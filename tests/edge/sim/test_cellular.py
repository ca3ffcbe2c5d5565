"""The simulated cellular link: its bandwidth limit's arithmetic and bytes crossing intact."""

from __future__ import annotations

import socket

import pytest

from edge.sim.cellular import MSS, PACKET_OVERHEAD, CellularLink


def test_unlimited_by_default_adds_only_the_delay() -> None:
    link = CellularLink("127.0.0.1", 9, delay_s=0.05)
    data = b"x" * 100_000
    assert link.schedule(True, data, 10.0) == [(10.05, data)]


def test_a_limited_direction_paces_packets_with_their_headers() -> None:
    link = CellularLink("127.0.0.1", 9, delay_s=0.05, up_kbit_s=300)
    data = bytes(range(256)) * 10  # 2,560 B: one full packet and one of 1,112 B
    pieces = link.schedule(True, data, 10.0)
    assert b"".join(p for _, p in pieces) == data
    assert [len(p) for _, p in pieces] == [MSS, len(data) - MSS]
    first = (MSS + PACKET_OVERHEAD) * 8 / 300_000
    second = (len(data) - MSS + PACKET_OVERHEAD) * 8 / 300_000
    assert pieces[0][0] == pytest.approx(10.0 + first + 0.05)
    assert pieces[1][0] == pytest.approx(10.0 + first + second + 0.05)


def test_the_radio_is_shared_and_queues_what_comes_while_it_is_busy() -> None:
    link = CellularLink("127.0.0.1", 9, up_kbit_s=8)  # 1 byte per ms
    ((busy_until, _),) = link.schedule(True, b"a" * 948, 0.0)  # 1,000 B of airtime
    assert busy_until == pytest.approx(1.0)
    ((later, _),) = link.schedule(True, b"b" * 48, 0.5)  # arrives while the radio is busy
    assert later == pytest.approx(1.1)
    ((idle, _),) = link.schedule(True, b"c" * 48, 5.0)  # arrives after it went idle
    assert idle == pytest.approx(5.1)
    # The other direction has its own radio, unlimited here.
    assert link.schedule(False, b"d", 0.5) == [(0.5, b"d")]


@pytest.mark.parametrize("rate", [0, -300])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="up_kbit_s"):
        CellularLink("127.0.0.1", 9, up_kbit_s=rate)


def test_bytes_cross_a_limited_link_intact_and_counted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        link = CellularLink("127.0.0.1", port, delay_s=0.001, up_kbit_s=4000, down_kbit_s=2000)
        with link:
            with socket.create_connection((link.host, link.port), timeout=10) as device:
                far, _ = server.accept()
                with far:
                    far.settimeout(10)
                    sent = bytes(range(256)) * 400  # 102,400 B: beyond one packet and one read
                    device.sendall(sent)
                    got = bytearray()
                    while len(got) < len(sent):
                        chunk = far.recv(65536)
                        assert chunk
                        got += chunk
                    assert bytes(got) == sent
                    far.sendall(b"pong" * 1000)
                    back = bytearray()
                    while len(back) < 4000:
                        chunk = device.recv(65536)
                        assert chunk
                        back += chunk
                    assert bytes(back) == b"pong" * 1000
        assert (link.bytes_up, link.bytes_down) == (len(sent), 4000)
