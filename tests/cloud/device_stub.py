"""A device's MQTT connection with its last will, run as its own process by the tests.

``python -m tests.cloud.device_stub PORT DEVICE``: connects with the will
``status = offline, "connection lost"`` (retained, QoS 1) as the daemon does,
publishes ``status = online`` (retained), prints ``online`` and waits.  The
test kills it with SIGKILL, so the broker (not this process) says it is gone.
"""

from __future__ import annotations

import signal
import sys

import paho.mqtt.client as mqtt

from edge.event import DEFAULT_TOPIC_PREFIX, Status, encode_status, status_topic


def main() -> None:
    port, device = int(sys.argv[1]), sys.argv[2]
    topic = status_topic(DEFAULT_TOPIC_PREFIX, device)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device)
    will = encode_status(Status(device=device, state="offline", reason="connection lost"))
    client.will_set(topic, will, qos=1, retain=True)
    client.connect("127.0.0.1", port, keepalive=30)
    client.loop_start()
    online = client.publish(topic, encode_status(Status(device=device, state="online")), 1, True)
    online.wait_for_publish(10)
    print("online", flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
