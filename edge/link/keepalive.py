"""How long the uplink may stay silent: the MQTT keepalive, learned from how connections die.

A cellular carrier's NAT forgets an idle TCP flow after some minutes (often
30, sometimes 5).  A ping every ``keepalive_s`` keeps the flow alive if it
comes sooner than that; if it comes later, the flow is gone and the next
ping goes nowhere: the connection dies (an unanswered ping, or a reset), the
device reconnects (a full TLS handshake: 14 to 23 pings' worth of bytes) and
the broker's last will says it went offline.  A long keepalive saves data
only where the carrier keeps idle flows that long, and nobody knows that
before the device is in the field.

:class:`KeepaliveRule` is the pure rule the uplink consults (no I/O, no clock
of its own, like :class:`edge.link.ack_tracker.AckTracker`): it is told how each
connection ended and says which keepalive the next CONNECT asks for.

* **An idle death** is a connection that died after carrying nothing for at
  least :data:`IDLE_FRACTION` of its keepalive (a ping went unanswered, or the
  link was reset when the ping went out).  It steps the keepalive down to half
  (never below ``min_s``), *tentatively*: if the next connection attempt
  fails, the network itself was down (a lost cell tower, not a NAT), and the
  step is undone.  A connection that opens at once confirms it.
* **A stable keepalive** (connected for ``probe_after_s`` in all without an
  idle death) is probed upwards at the next reconnect (the uplink never
  reconnects just to probe): halfway to the value that last died idle (or to
  the configured keepalive), so that it converges on the carrier's timeout.
  A probe that dies idle goes back to the value that was stable, and the wait
  before the next probe doubles (up to :data:`MAX_PROBE_BACKOFF` times
  ``probe_after_s``, a month at the default), so that once the keepalive has
  converged under the carrier's timeout, probing costs about a reconnect a
  month.
* The learned state is a small :class:`KeepaliveState` that the uplink keeps
  in the device's state directory (``keepalive.json``), so a restart neither
  forgets it nor relearns it at the cost of reconnects.  A state learned under
  other settings (``keepalive_s`` or ``keepalive_min_s`` changed) is ignored.
"""

from __future__ import annotations

from typing import Final

import msgspec

IDLE_FRACTION: Final = 0.75
"""A connection silent for this share of its keepalive before it died died of idleness."""
MAX_PROBE_BACKOFF: Final = 10
"""The wait before probing a longer keepalive grows to at most this many ``probe_after_s``."""
MIN_PROBE_STEP_S: Final = 30
"""A probe raises the keepalive by at least this much (else it tries the ceiling itself)."""


class KeepaliveState(msgspec.Struct, kw_only=True):
    """What the rule has learned (kept as JSON across restarts)."""

    configured_s: int
    """``uplink.keepalive_s`` when this was learned."""
    min_s: int
    """``uplink.keepalive_min_s`` when this was learned."""
    keepalive_s: int
    """The keepalive the next connection asks for."""
    stable_s: int
    """The last keepalive that survived (what a failed probe returns to)."""
    ceiling_s: int
    """The shortest keepalive known to die idle (``configured_s``: none known)."""
    connected_s: float = 0.0
    """Seconds connected at ``keepalive_s`` without an idle death."""
    probe_wait_s: float = 0.0
    """Connected seconds to wait before the next probe upwards."""
    probing: bool = False
    """``keepalive_s`` is a probe above ``stable_s``, not yet confirmed."""
    idle_deaths: int = 0
    """Idle deaths counted (since the state was created)."""


class KeepaliveRule:
    """Which keepalive to ask for, from how connections ended (see the module docstring)."""

    def __init__(
        self,
        *,
        configured_s: int,
        min_s: int,
        probe_after_s: float,
        state: KeepaliveState | None = None,
    ) -> None:
        if not 0 < min_s <= configured_s:
            raise ValueError(f"min_s ({min_s}) must be in 1..configured_s ({configured_s})")
        self.configured_s = configured_s
        self.min_s = min_s
        self.probe_after_s = probe_after_s
        if state is None or not self._fits(state):
            state = KeepaliveState(
                configured_s=configured_s,
                min_s=min_s,
                keepalive_s=configured_s,
                stable_s=configured_s,
                ceiling_s=configured_s,
                probe_wait_s=probe_after_s,
            )
        self.state = state
        self._undo: KeepaliveState | None = None
        """The state before a tentative step down (restored if the network was down)."""

    def _fits(self, s: KeepaliveState) -> bool:
        return (
            s.configured_s == self.configured_s
            and s.min_s == self.min_s
            and self.min_s <= s.stable_s <= s.keepalive_s <= s.ceiling_s <= self.configured_s
            and s.connected_s >= 0
            and s.probe_wait_s > 0
        )

    @property
    def keepalive_s(self) -> int:
        """The keepalive the next CONNECT asks for."""
        return self.state.keepalive_s

    def idle_death(self, *, idle_s: float, keepalive_s: int) -> bool:
        """Whether a connection silent ``idle_s`` before it died, at ``keepalive_s``, died idle."""
        return idle_s >= IDLE_FRACTION * keepalive_s

    def connected(self) -> None:
        """A connection opened: a tentative step down stands (the network was up)."""
        self._undo = None

    def connect_failed(self) -> bool:
        """A connection attempt failed: the network is down, so the last idle death was
        not the NAT's doing.  Returns True when a step down was undone."""
        if self._undo is None:
            return False
        self.state, self._undo = self._undo, None
        return True

    def ended(self, *, connected_s: float, idle_s: float, keepalive_s: int) -> bool:
        """A connection that asked for ``keepalive_s`` ended after ``connected_s`` (not by
        our own goodbye), silent for the last ``idle_s``.  Returns True when the keepalive
        for the next connection changed."""
        s = self.state
        before = s.keepalive_s
        if keepalive_s != s.keepalive_s:
            return False  # a connection from before the last change: says nothing now
        if self.idle_death(idle_s=idle_s, keepalive_s=keepalive_s):
            self._undo = msgspec.structs.replace(s)
            s.idle_deaths += 1
            s.ceiling_s = keepalive_s
            if s.probing and s.stable_s < keepalive_s:
                # The probe failed: back to what held, and probe less often.
                s.keepalive_s = s.stable_s
                s.probe_wait_s = min(s.probe_wait_s * 2, self.probe_after_s * MAX_PROBE_BACKOFF)
            else:
                s.keepalive_s = s.stable_s = max(self.min_s, keepalive_s // 2)
                s.probe_wait_s = self.probe_after_s
            s.probing = False
            s.connected_s = 0.0
            return s.keepalive_s != before
        s.connected_s += max(0.0, connected_s)
        if s.probing and s.connected_s >= min(s.probe_wait_s, self.probe_after_s):
            # The probe held as long as a stable value must: it is the stable value now.
            s.stable_s = s.keepalive_s
            s.probing = False
            s.connected_s = 0.0  # (the wait keeps its backoff: probes near the ceiling fail)
        if not s.probing and s.connected_s >= s.probe_wait_s and s.keepalive_s < self.configured_s:
            target = (s.keepalive_s + s.ceiling_s) // 2
            if target - s.keepalive_s < MIN_PROBE_STEP_S:
                # Next to the ceiling: try the ceiling itself again (the carrier may have
                # changed), or the configured value once the ceiling is reached.
                target = s.ceiling_s if s.ceiling_s > s.keepalive_s else self.configured_s
                s.ceiling_s = self.configured_s
            s.stable_s = s.keepalive_s
            s.keepalive_s = min(self.configured_s, target)
            s.probing = True
            s.connected_s = 0.0
        return s.keepalive_s != before

    def encode(self) -> bytes:
        return msgspec.json.encode(self.state)

    @staticmethod
    def decode(data: bytes) -> KeepaliveState | None:
        """A saved state, or None when it cannot be read (then the rule starts afresh)."""
        try:
            return msgspec.json.decode(data, type=KeepaliveState)
        except msgspec.DecodeError:
            return None
