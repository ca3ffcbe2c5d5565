import socket

from edge.sim.broker import Mosquitto


def test_broker_fixture_listens_and_restarts_on_same_port(broker: Mosquitto) -> None:
    with socket.create_connection((broker.host, broker.port), timeout=1):
        pass
    broker.stop()
    try:
        socket.create_connection((broker.host, broker.port), timeout=0.5).close()
        raise AssertionError("broker still listening after stop()")
    except OSError:
        pass
    broker.start()
    with socket.create_connection((broker.host, broker.port), timeout=1):
        pass
