"""4-20 mA pressure probe through the emulated ADS1115: depth, NAMUR faults, range choice."""

from __future__ import annotations

import errno
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ads1115 import ADS1115, Mux
from drivers.errors import BusError, DriverError, LoopFault, TransientDriverError
from drivers.pressure_probe import PressureProbe, ProbeReading, choose_pga
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus

ADDR = 0x48
LSB_MA = 4.096 / 32768 / 150 * 1000  # one ADC step at ±4.096 V across 150 Ω, in mA


@pytest.fixture
def chip() -> ADS1115Model:
    return ADS1115Model(instant=True)


@pytest.fixture
def adc(chip: ADS1115Model) -> ADS1115:
    bus = EmulatedI2CBus()
    bus.attach(ADDR, chip)
    return ADS1115(bus, ADDR)


@pytest.fixture
def probe(adc: ADS1115) -> PressureProbe:
    return PressureProbe(adc, 1, shunt_ohm=150.0, range_cm=500.0, data_rate=860)


def test_defaults_pick_the_range_that_fits_20ma_and_a_short(adc: ADS1115) -> None:
    probe = PressureProbe(adc, 0)
    assert probe.pga == 4.096  # 20 mA x 150 Ω = 3.0 V; 22 mA still fits
    assert probe.mux is Mux.AIN0


@pytest.mark.parametrize(
    ("ma", "depth_cm", "clamped"),
    [
        (3.6, 0.0, True),  # NAMUR's lowest healthy current: below the span, clamped
        (3.8, 0.0, True),
        (4.0, 0.0, False),
        (8.0, 125.0, False),
        (12.0, 250.0, False),
        (20.0, 500.0, False),
        (20.5, 500.0, True),
        (21.0, 500.0, True),  # NAMUR's highest healthy current
    ],
)
def test_current_maps_to_depth(
    chip: ADS1115Model, probe: PressureProbe, ma: float, depth_cm: float, clamped: bool
) -> None:
    chip.set_current_ma(1, ma, 150.0)
    reading = probe.read()
    assert reading.current_ma == pytest.approx(ma, abs=LSB_MA)
    assert reading.depth_cm == pytest.approx(depth_cm, abs=500 * LSB_MA / 16)
    assert reading.volts == pytest.approx(ma * 0.150, abs=4.096 / 32768)
    assert reading.clamped is clamped


@pytest.mark.parametrize(
    ("ma", "kind"),
    [(0.0, "wire_break"), (3.59, "wire_break"), (21.01, "short"), (30.0, "short")],
)
def test_namur_faults_are_never_levels(
    chip: ADS1115Model, probe: PressureProbe, ma: float, kind: str
) -> None:
    chip.set_current_ma(1, ma, 150.0)
    with pytest.raises(LoopFault) as caught:
        probe.read()
    fault = caught.value
    assert fault.kind == kind
    assert fault.current_ma is not None
    assert isinstance(fault, ValueError)
    assert isinstance(fault, DriverError)
    assert not isinstance(fault, TransientDriverError)


def test_thresholds_are_exact_at_the_boundaries(probe: PressureProbe) -> None:
    """3.6 and 21.0 mA are the last healthy currents; one ADC step beyond is a fault."""
    raw_3_6 = 4320  # 3.6 mA x 150 Ω = 0.54 V = 4320 steps of 125 µV
    raw_21 = 25200  # 3.15 V
    assert probe.reading_from_raw(raw_3_6).current_ma == 3.6
    assert probe.reading_from_raw(raw_21).current_ma == 21.0
    with pytest.raises(LoopFault, match="wire break"):
        probe.reading_from_raw(raw_3_6 - 1)
    with pytest.raises(LoopFault, match="short"):
        probe.reading_from_raw(raw_21 + 1)


@settings(deadline=None, max_examples=50)
@given(ma=st.floats(4.0, 20.0), range_cm=st.sampled_from([100.0, 350.0, 500.0, 1000.0]))
def test_depth_is_linear_across_the_span(ma: float, range_cm: float) -> None:
    bus = EmulatedI2CBus()
    chip = ADS1115Model(instant=True)
    bus.attach(ADDR, chip)
    probe = PressureProbe(ADS1115(bus, ADDR), 2, range_cm=range_cm, data_rate=860)
    chip.set_current_ma(2, ma, 150.0)
    reading = probe.read()
    expected = (ma - 4.0) / 16.0 * range_cm
    assert reading.depth_cm == pytest.approx(expected, abs=range_cm * LSB_MA / 16 + 1e-9)
    assert 0.0 <= reading.depth_cm <= range_cm


def test_differential_high_side_shunt(chip: ADS1115Model, adc: ADS1115) -> None:
    probe = PressureProbe(adc, Mux.DIFF_0_1, shunt_ohm=100.0, range_cm=300.0, data_rate=860)
    chip.set_input(0, 3.2)
    chip.set_input(1, 3.2 - 0.012 * 100)  # 12 mA through 100 Ω
    reading = probe.read()
    assert reading.current_ma == pytest.approx(12.0, abs=0.01)
    assert reading.depth_cm == pytest.approx(150.0, abs=0.2)


def test_range_choice_and_refusals(adc: ADS1115) -> None:
    assert choose_pga(150.0) == 4.096
    assert choose_pga(50.0) == 2.048
    assert choose_pga(10.0) == 0.256
    with pytest.raises(ValueError, match="short"):
        PressureProbe(adc, 0, shunt_ohm=150.0, pga=2.048)  # clips at 13.7 mA
    with pytest.raises(ValueError, match="supply"):
        PressureProbe(adc, 0, shunt_ohm=250.0)  # 21 mA x 250 Ω = 5.25 V > 3.3 V
    assert PressureProbe(adc, 0, shunt_ohm=220.0, supply_v=5.0).pga == 6.144
    with pytest.raises(ValueError):
        PressureProbe(adc, 0, data_rate=100)
    with pytest.raises(ValueError):
        PressureProbe(adc, 4)


def test_bus_faults_propagate_as_bus_errors(chip: ADS1115Model, probe: PressureProbe) -> None:
    chip.set_current_ma(1, 12.0)
    chip.fail_next(1, errno.EREMOTEIO)
    with pytest.raises(BusError) as caught:
        probe.read()
    assert caught.value.errno == errno.EREMOTEIO
    assert probe.read().depth_cm == pytest.approx(250.0, abs=0.1)
    chip.unplug()
    with pytest.raises(BusError):
        probe.read()
    chip.plug()
    assert probe.read().depth_cm == pytest.approx(250.0, abs=0.1)


def test_loop_fault_survives_pickling() -> None:
    fault = LoopFault("short", 23.5)
    copy = pickle.loads(pickle.dumps(fault))
    assert (copy.kind, copy.current_ma, str(copy)) == ("short", 23.5, str(fault))
    assert str(LoopFault("wire_break")) == "4-20 mA loop wire break"
    with pytest.raises(ValueError):
        LoopFault("flood")  # type: ignore[arg-type]


def test_reading_is_a_value() -> None:
    reading = ProbeReading(current_ma=12.0, depth_cm=250.0, volts=1.8)
    assert reading.clamped is False
    with pytest.raises(AttributeError):
        reading.depth_cm = 1.0  # type: ignore[misc]
