"""The inference wrapper on the committed models, through the real LiteRT interpreter."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drivers.motion_mat import MatFrame
from edge.inference.posture_input import CLIP
from edge.inference.runtime import (
    ANOMALY_TESTS,
    UNKNOWN,
    AnomalyModel,
    Model,
    ModelError,
    PostureModel,
    packaged_model,
)
from edge.sim.mat_emulator import random_frame
from models.anomaly.data import anomalous_windows, normal_windows

POSTURE_TFLITE, POSTURE_CARD = packaged_model("posture")
ANOMALY_TFLITE, ANOMALY_CARD = packaged_model("anomaly")


@pytest.fixture(scope="module")
def posture() -> Iterator[PostureModel]:
    model = PostureModel.load()
    yield model
    model.close()


@pytest.fixture(scope="module", params=["water", "mat_load"])
def anomaly(request: pytest.FixtureRequest) -> Iterator[AnomalyModel]:
    model = AnomalyModel.load(series=request.param)
    yield model
    model.close()


def _copy(tmp_path: Path, name: str = "posture") -> tuple[Path, Path, dict[str, object]]:
    src, card = packaged_model(name)
    dst = tmp_path / src.name
    shutil.copyfile(src, dst)
    card_dst = tmp_path / "card.json"
    shutil.copyfile(card, card_dst)
    return dst, card_dst, json.loads(card_dst.read_text())


# -- loading and the card checks ---------------------------------------------------------


@pytest.mark.parametrize("name", ["posture", "anomaly"])
def test_committed_models_match_their_cards(name: str) -> None:
    tflite, card_path = packaged_model(name)
    card = json.loads(card_path.read_text())
    with Model.load(tflite, card_path) as model:
        assert list(model.input_shape) == card["input"]["shape"]
        assert list(model.output_shape) == card["output"]["shape"]
        assert card["input"]["dtype"] == card["output"]["dtype"] == "int8"
        assert card["sha256"] == hashlib.sha256(tflite.read_bytes()).hexdigest()
        assert tflite.stat().st_size == card["size_bytes"] <= 100 * 1024


def test_posture_input_is_canonical_and_spans_its_int8_range(posture: PostureModel) -> None:
    card = posture.model.card
    assert card["preprocessing"]["canonical"] == 1
    assert card["preprocessing"]["clip"] == CLIP
    assert card["input"]["zero_point"] == -128
    assert card["input"]["scale"] == pytest.approx(CLIP / 255)
    assert posture.labels == ("empty", "supine", "prone", "left", "right")
    decision = card["decision"]
    assert decision["temperature"] > 0
    assert 0 < decision["prone_threshold"] <= decision["answer_threshold"] < 1


def test_missing_model_file(tmp_path: Path) -> None:
    _, card, _ = _copy(tmp_path)
    with pytest.raises(ModelError, match="model file missing"):
        Model.load(tmp_path / "nothing.tflite", card)


def test_missing_card(tmp_path: Path) -> None:
    tflite, card, _ = _copy(tmp_path)
    card.unlink()
    with pytest.raises(ModelError, match="model card missing"):
        Model.load(tflite)


def test_truncated_file_is_a_hash_mismatch(tmp_path: Path) -> None:
    tflite, card, _ = _copy(tmp_path)
    tflite.write_bytes(tflite.read_bytes()[:1000])
    with pytest.raises(ModelError, match="hash mismatch"):
        Model.load(tflite, card)


def test_corrupt_file_the_interpreter_refuses(tmp_path: Path) -> None:
    # A truncated file whose card was (wrongly) updated to its hash: the hash
    # check passes and the interpreter itself must reject it.
    tflite, card_path, card = _copy(tmp_path)
    broken = tflite.read_bytes()[:1000]
    tflite.write_bytes(broken)
    card["sha256"] = hashlib.sha256(broken).hexdigest()
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match="corrupt model file"):
        Model.load(tflite, card_path)


def test_garbage_card(tmp_path: Path) -> None:
    tflite, card_path, _ = _copy(tmp_path)
    card_path.write_text("{not json")
    with pytest.raises(ModelError, match="model card unreadable"):
        Model.load(tflite, card_path)


@pytest.mark.parametrize(
    ("role", "key", "value", "message"),
    [
        ("input", "shape", [1, 32, 16, 1], r"input shape \[1, 16, 32, 1\] \(card: \[1, 32, 16"),
        ("output", "shape", [1, 4], r"output shape \[1, 5\] \(card: \[1, 4\]\)"),
        ("input", "dtype", "uint8", r"input dtype int8 \(card: uint8\)"),
        ("input", "scale", 0.5, r"input quantisation scale"),
        ("output", "zero_point", 3, r"output quantisation zero point -128 \(card: 3\)"),
    ],
)
def test_card_mismatch_names_the_tensor(
    tmp_path: Path, role: str, key: str, value: object, message: str
) -> None:
    tflite, card_path, card = _copy(tmp_path)
    card[role][key] = value  # type: ignore[index]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=message):
        Model.load(tflite, card_path)


def test_model_error_is_a_value_error() -> None:
    assert issubclass(ModelError, ValueError)


def test_unknown_anomaly_series() -> None:
    with pytest.raises(ModelError, match="no calibration for series 'rainfall'"):
        AnomalyModel.load(series="rainfall")


# -- posture -------------------------------------------------------------------------------

# Frames from the emulator's seeded body model, with seeds no training run used.
KNOWN = {"empty": 2_000_900_001, "supine": 2_000_900_002, "prone": 2_000_900_003,
         "left": 2_000_900_004, "right": 2_000_900_005}  # fmt: skip


@pytest.mark.parametrize("label", list(KNOWN))
def test_known_frame_gives_its_posture(posture: PostureModel, label: str) -> None:
    frame = MatFrame(7, 16, 32, random_frame(label, KNOWN[label]))
    got, p = posture.classify(frame)
    assert got == label
    assert 0.5 < p <= 1.0
    probs = posture.probabilities(frame)
    assert sum(probs.values()) == pytest.approx(1.0, abs=0.02)


def test_prone_frames_are_caught(posture: PostureModel) -> None:
    frames = [MatFrame(0, 16, 32, random_frame("prone", 2_000_950_000 + i)) for i in range(40)]
    assert [posture.classify(f)[0] for f in frames] == ["prone"] * 40


def _frame_and_level(label: str, seed: int) -> tuple[MatFrame, list[float]]:
    cells = random_frame(label, seed)
    level = np.frombuffer(random_frame("empty", seed), dtype=np.uint8).astype(float)
    return MatFrame(0, 16, 32, cells), level.tolist()


def test_a_bare_mat_is_never_prone_however_high_its_empty_level(posture: PostureModel) -> None:
    """The first model called a bare mat at 10 counts a cell "prone" 50 times in 50."""
    for counts in (3, 10, 40):
        bare = MatFrame(0, 16, 32, bytes([counts]) * 512)
        assert posture.classify(bare)[0] == "empty"
        assert posture.classify(bare, [float(counts)] * 512)[0] == "empty"


def test_a_child_turned_round_gets_the_same_answer(posture: PostureModel) -> None:
    for label, seed in KNOWN.items():
        frame, level = _frame_and_level(label, seed)
        cells = np.frombuffer(frame.cells, dtype=np.uint8).reshape(16, 32)
        turned = MatFrame(0, 16, 32, np.ascontiguousarray(cells[::-1, ::-1]).tobytes())
        turned_level = np.asarray(level).reshape(16, 32)[::-1, ::-1].ravel()
        a = posture.probabilities(frame, level)
        b = posture.probabilities(turned, turned_level)
        assert a == pytest.approx(b, abs=1e-6), label


def test_a_mat_whose_offsets_crept_up_gives_the_same_answer(posture: PostureModel) -> None:
    """Every cell 3 counts above the calibration (the room warmed since): same answers."""
    for label, seed in KNOWN.items():
        frame, level = _frame_and_level(label, seed)
        crept = MatFrame(0, 16, 32, bytes(min(255, c + 3) for c in frame.cells))
        assert posture.classify(crept, level)[0] == posture.classify(frame, level)[0], label


def test_below_its_answer_threshold_the_model_says_unknown(tmp_path: Path) -> None:
    tflite, card_path, card = _copy(tmp_path)
    frame, level = _frame_and_level("supine", KNOWN["supine"])
    with PostureModel.load(tflite, card_path) as sure:
        label, p = sure.classify(frame, level)
    assert label == "supine"
    card["decision"]["answer_threshold"] = min(0.9999, p + 0.001)  # type: ignore[index]
    card["decision"]["prone_threshold"] = 0.9999  # type: ignore[index]
    card_path.write_text(json.dumps(card))
    with PostureModel.load(tflite, card_path) as unsure:
        assert unsure.classify(frame, level)[0] == UNKNOWN


def test_wrong_geometry_is_refused(posture: PostureModel) -> None:
    with pytest.raises(ValueError, match="needs 16 x 32 frames, got 8 x 8"):
        posture.classify(MatFrame(0, 8, 8, bytes(64)))


# -- anomaly -------------------------------------------------------------------------------


def _normal(kind: str) -> np.ndarray:
    return normal_windows(kind, [2_000_990_000], per_seed=1)[0]


def test_normal_windows_are_rarely_flagged(anomaly: AnomalyModel) -> None:
    # Thresholds are calibrated for <= 1 % false positives per window.
    windows = normal_windows(anomaly.series, range(2_000_970_000, 2_000_970_100), per_seed=2)
    flagged = sum(anomaly.is_anomalous(w) for w in windows)
    assert flagged <= 6, f"{flagged} of {len(windows)} normal windows flagged"


def test_a_quiet_normal_window_is_not_flagged(anomaly: AnomalyModel) -> None:
    w = _normal(anomaly.series)
    assert anomaly.score(list(w)) < anomaly.threshold
    assert not anomaly.is_anomalous(w)


@pytest.mark.parametrize(
    ("fault", "pattern_test"), [("spike", "peak"), ("stuck", "quiet"), ("drop", "peak")]
)
def test_injected_fault_is_flagged(anomaly: AnomalyModel, fault: str, pattern_test: str) -> None:
    w = _normal(anomaly.series)
    big = 25.0 if anomaly.series == "water" else 1.5  # cm / kg
    if fault == "spike":
        w[40] += big
    elif fault == "stuck":
        w[10:] = w[10]
    else:
        w[30:] -= big
    assert anomaly.is_anomalous(w), f"{fault}: tests {anomaly.tests(w)}"
    score, passed = anomaly.assess(w)
    assert score > 0
    assert pattern_test in passed, f"{fault}: {passed}"


@pytest.mark.parametrize("fault", ["spike", "drop"])
def test_a_modest_spike_or_step_in_a_calm_window_is_flagged(
    anomaly: AnomalyModel, fault: str
) -> None:
    # v2.1's peak test weighs a burst against the window's own noise, so a
    # fault far smaller than a rain rise stands out of a calm level (v2.0
    # caught a third of the 6-10 cm spikes).  Calm: a flat level, noise as the
    # generator's.  Water: a 10 cm spike, a 15 cm step (a probe slipping on its
    # mount; smaller steps are partly followed by the autoencoder, see
    # MODEL_CARD.md); mat: 0.5 kg.
    water = anomaly.series == "water"
    size = (10.0 if fault == "spike" else 15.0) if water else 0.5
    caught = []
    for seed in range(40):
        rng = np.random.default_rng([seed, 77])
        w = 40.0 + rng.normal(0.0, 0.75, 64) if water else 7.0 + rng.normal(0.0, 0.03, 64)
        w = np.round(w, 1 if water else 3)
        assert not anomaly.is_anomalous(w), "the calm window alone"
        if fault == "spike":
            w[int(rng.integers(4, 60))] -= size
        else:
            w[int(rng.integers(8, 56)) :] -= size
        score, passed = anomaly.assess(w)
        # the mat's steps are mostly caught by the denoised test instead
        caught.append(score > 0 and ("peak" in passed or not water))
    assert np.mean(caught) >= 0.9, f"{fault}: {np.mean(caught):.2f}"


def test_drift_is_flagged(anomaly: AnomalyModel) -> None:
    # The denoising head reconstructs the normal series under a ramp, so a
    # drift's residual is the ramp itself (v1.0 missed ~95 % of water drifts).
    d = 25.0 if anomaly.series == "water" else 1.5  # cm / kg at the window's end
    w = _normal(anomaly.series) - d * np.clip(np.arange(64) - 16, 0, None) / 47
    assert anomaly.is_anomalous(w), f"drift: tests {anomaly.tests(w)}"
    assert "denoised" in anomaly.assess(w)[1]


def test_most_held_out_style_drifts_are_flagged(anomaly: AnomalyModel) -> None:
    windows = anomalous_windows(anomaly.series, "drift", range(2_000_980_000, 2_000_980_025))
    caught = np.mean([anomaly.is_anomalous(w) for w in windows])
    # water drift is the weakest type (MODEL_CARD.md): held-out recall ~78 %
    # (these 100 windows: see the assertion); v1.x at one reading a minute caught 44 %
    assert caught >= (0.55 if anomaly.series == "water" else 0.95), caught


def test_thresholds_from_the_card(anomaly: AnomalyModel) -> None:
    assert anomaly.heads == 2
    assert anomaly.model.output_shape[-1] == 2 * anomaly.window
    assert anomaly.denoised_reference_mse is not None and anomaly.denoised_reference_mse > 0
    assert set(anomaly.thresholds) <= set(ANOMALY_TESTS)
    assert {"quiet", "peak", "denoised"} <= set(anomaly.thresholds)  # stuck, spikes, drift
    assert set(anomaly.tests(_normal(anomaly.series))) == set(ANOMALY_TESTS)


def test_a_card_without_per_test_thresholds_is_refused(tmp_path: Path) -> None:
    tflite, card_path, card = _copy(tmp_path, "anomaly")
    series: Any = card["series"]
    del series["water"]["thresholds"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"calibration for 'water' is incomplete.*thresholds"):
        AnomalyModel.load(tflite, card_path, series="water")
    series["water"]["thresholds"] = {"wiggle": 1.0}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"name tests \['wiggle'\]"):
        AnomalyModel.load(tflite, card_path, series="water")


def test_window_length_is_checked(anomaly: AnomalyModel) -> None:
    with pytest.raises(ValueError, match="must hold 64 readings, got 10"):
        anomaly.score([1.0] * 10)


# -- threads -------------------------------------------------------------------------------


def test_predict_is_thread_safe(posture: PostureModel) -> None:
    rng = np.random.default_rng(3)
    inputs = [rng.uniform(0, 1, (16, 32)).astype(np.float32) for _ in range(16)]
    expected = [posture.model.predict(x) for x in inputs]
    errors: list[str] = []
    start = threading.Barrier(8)

    def worker(k: int) -> None:
        start.wait()
        for i in range(200):
            j = (i + k) % len(inputs)
            if not np.array_equal(posture.model.predict(inputs[j]), expected[j]):
                errors.append(f"thread {k} call {i}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_closed_model_refuses(tmp_path: Path) -> None:
    model = Model.load(POSTURE_TFLITE, POSTURE_CARD)
    model.close()
    model.close()
    with pytest.raises(ModelError, match="closed"):
        model.predict(np.zeros((16, 32), dtype=np.float32))
