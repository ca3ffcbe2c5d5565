"""models.evaluate's water breakdown: false events by test, drift recall by rate."""

from __future__ import annotations

import numpy as np

from edge.health.water_faults import WaterFaultDetector
from models import evaluate
from models.anomaly import scoring
from models.anomaly.scoring import Series

P = 600.0
DAY = 144


def test_the_drift_rate_is_read_only_from_a_drift_label() -> None:
    assert evaluate.drift_rate({"drift_cm_day": -6.0}) == 6.0
    assert evaluate.drift_rate({"drift_cm_per_day": 4.5}) == 4.5
    assert evaluate.drift_rate({"loss_cm_per_day": 3.0, "noise_cm": 0.2}) is None


def test_false_events_are_counted_by_test_and_drift_split_at_5_cm_a_day() -> None:
    rng = np.random.default_rng(3)
    quiet = np.round(40.0 + rng.normal(0.0, 0.2, 6 * DAY), 1)
    frozen = quiet.copy()
    frozen[3 * DAY :] = frozen[3 * DAY - 1]  # on a series labelled clean: a false "stuck"
    ramp = np.arange(3 * DAY) / DAY
    fast, slow = quiet.copy(), quiet.copy()
    fast[3 * DAY :] += 8.0 * ramp
    slow[3 * DAY :] += 0.5 * ramp
    series = [
        Series("calm", frozen, P, None, None, {}),
        Series("calm", np.round(fast, 1), P, "drift", 3 * DAY, {"drift_cm_day": 8.0}),
        Series("calm", np.round(slow, 1), P, "drift", 3 * DAY, {"drift_cm_day": 0.5}),
    ]
    sc = scoring.score(WaterFaultDetector, series)
    assert sc.false_tests == {"stuck": sc.false_events} and sc.false_events >= 1
    split = evaluate.drift_split(sc)
    assert split["rate_known"] and split["fast"] == (1, 1) and split["slow"] == (0, 1)
    line = evaluate.water_breakdown("calm", "rules", sc)
    assert "stuck" in line and "1/1 at >= 5 cm/day" in line and "50 % all rates" in line
    unlabelled = scoring.score(WaterFaultDetector, [Series("calm", series[1].values, P,
                                                           "drift", 3 * DAY, {})])  # fmt: skip
    assert not evaluate.drift_split(unlabelled)["rate_known"]
    assert "carry no drift rate" in evaluate.water_breakdown("calm", "rules", unlabelled)
