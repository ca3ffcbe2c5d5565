"""The link to the cloud: the durable outbox, the MQTT uplink, the cloud's acknowledgements,
telemetry batching, what the link costs, the device's identity, and commands and spooled events.

Pure rules: ``ack_tracker`` (when to resend) and ``keepalive`` (how long the link may stay silent).
"""
