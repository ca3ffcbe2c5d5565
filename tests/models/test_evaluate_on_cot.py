"""``models.evaluate``'s "on the cot" line: the model's answers as the nap rule reads them
(occupancy from the frame's load first), so a face-down child the model calls "empty" is
counted as "look now" and a frame read as a safe posture is counted as safe."""

from __future__ import annotations

import numpy as np

from edge.nursery.mat import COUNTS_PER_KG
from models.evaluate import LABELS, on_cot, on_cot_line, on_cot_shares


def _frames(kg: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """16 x 32 frames on an empty level of 10 counts, each with ``kg`` pressed into a
    child-sized patch in the middle."""
    levels = np.full((len(kg), 16, 32), 10.0, dtype=np.float32)
    frames = np.full((len(kg), 16, 32), 10, dtype=np.uint8)
    for i, w in enumerate(kg):
        frames[i, 4:12, 8:24] += np.uint8(round(w * COUNTS_PER_KG / (8 * 16)))
    return frames, levels


def test_the_nap_rules_reading_of_each_answer() -> None:
    # A 6 kg child face down, answered: prone, empty, unknown, supine; then an empty cot
    # answered prone (the load says nobody is there).
    frames, levels = _frames([6.0, 6.0, 6.0, 6.0, 0.0])
    pred = np.array([LABELS.index("prone"), LABELS.index("empty"), -1,
                     LABELS.index("supine"), LABELS.index("prone")])  # fmt: skip
    assert on_cot(pred, frames, levels) == ["prone", "unknown", "unknown", "supine", "empty"]


def test_face_down_frames_split_into_alarm_look_now_and_read_as_safe() -> None:
    frames, levels = _frames([6.0] * 4 + [4.0] * 2)
    y = np.array([LABELS.index("prone")] * 4 + [LABELS.index("left")] * 2)
    pred = np.array([LABELS.index(v) for v in ("prone", "empty", "supine", "prone", "prone",
                                                "left")])  # fmt: skip
    shares = on_cot_shares(y, on_cot(pred, frames, levels))
    assert shares["face_down"] == {"face_down": 0.5, "look_now": 0.25, "safe": 0.25}
    assert shares["back_or_side"] == {"face_down": 0.5, "look_now": 0.0, "safe": 0.5}
    assert on_cot_line(shares).startswith(
        "on the cot (the nap rule's reading): face down -> face down 50.0 %, look now 25.0 %, "
        "read as safe 25.0 %; back or side -> face down 50.0 %"
    )
