"""ADS1115 driver against the register-level emulator: encoding, byte order, timing, faults."""

from __future__ import annotations

import errno
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.ads1115 import (
    ADS1115,
    CONFIG_RESET,
    DATA_RATES,
    PGA_CODES,
    Config,
    Mux,
    conversion_timeout_s,
    open_bus,
    raw_to_volts,
    volts_to_raw,
)
from drivers.errors import (
    BusError,
    DriverError,
    ProtocolError,
    SensorTimeout,
    TransientDriverError,
)
from edge.sim.i2c import ADS1115Model, EmulatedI2CBus, EmulatedI2CDevice

ADDR = 0x48
PGAS = sorted(PGA_CODES)


@pytest.fixture
def bus() -> EmulatedI2CBus:
    return EmulatedI2CBus()


@pytest.fixture
def chip(bus: EmulatedI2CBus) -> ADS1115Model:
    model = ADS1115Model(instant=True)
    bus.attach(ADDR, model)
    return model


@pytest.fixture
def adc(bus: EmulatedI2CBus, chip: ADS1115Model) -> ADS1115:
    return ADS1115(bus, ADDR)


def lsb(pga: float) -> float:
    return pga / 32768


# -- the config register -------------------------------------------------------------------


def test_config_matches_the_datasheet_bit_layout() -> None:
    # OS=1 | MUX=100 (AIN0) | PGA=001 (4.096) | MODE=1 | DR=100 (128) | comparator off (11)
    word = Config(Mux.AIN0, pga=4.096, data_rate=128, start=True).encode()
    assert word == 0b1_100_001_1_100_0_0_0_11 == 0xC383
    reset = Config.decode(CONFIG_RESET)
    assert (reset.mux, reset.pga, reset.data_rate, reset.single_shot, reset.start) == (
        Mux.DIFF_0_1,
        2.048,
        128,
        True,
        True,
    )
    assert reset.comp_queue == 0b11


@given(
    mux=st.sampled_from(list(Mux)),
    pga=st.sampled_from(PGAS),
    data_rate=st.sampled_from(DATA_RATES),
    single_shot=st.booleans(),
    start=st.booleans(),
    window=st.booleans(),
    active_high=st.booleans(),
    latching=st.booleans(),
    queue=st.integers(0, 3),
)
def test_config_encode_decode_round_trip(
    mux: Mux,
    pga: float,
    data_rate: int,
    single_shot: bool,
    start: bool,
    window: bool,
    active_high: bool,
    latching: bool,
    queue: int,
) -> None:
    config = Config(mux, pga, data_rate, single_shot, start, window, active_high, latching, queue)
    word = config.encode()
    assert 0 <= word <= 0xFFFF
    assert Config.decode(word) == config


@given(st.integers(0, 0xFFFF))
def test_every_register_value_decodes_and_reencodes(word: int) -> None:
    pga_code = (word >> 9) & 0b111
    canonical = word if pga_code <= 5 else (word & ~(0b111 << 9)) | (5 << 9)  # 6, 7 mean 0.256 V
    assert Config.decode(word).encode() == canonical


def test_bad_arguments_are_refused(bus: EmulatedI2CBus) -> None:
    with pytest.raises(ValueError, match="full-scale"):
        Config(Mux.AIN0, pga=5.0)
    with pytest.raises(ValueError, match="data rate"):
        Config(Mux.AIN0, data_rate=100)
    with pytest.raises(ValueError, match="address"):
        ADS1115(bus, 0x50)
    with pytest.raises(ValueError, match="channel"):
        Mux.single(4)


# -- conversions ---------------------------------------------------------------------------


@given(st.sampled_from(PGAS), st.integers(-32768, 32767))
def test_raw_volts_raw_is_exact(pga: float, raw: int) -> None:
    assert volts_to_raw(raw_to_volts(raw, pga), pga) == raw


@settings(deadline=None, max_examples=60)
@given(
    pga=st.sampled_from(PGAS),
    mux=st.sampled_from(list(Mux)),
    pins=st.lists(st.floats(0.0, 3.3, allow_nan=False), min_size=4, max_size=4),
)
def test_conversion_round_trip_within_one_lsb(pga: float, mux: Mux, pins: list[float]) -> None:
    bus = EmulatedI2CBus()
    chip = ADS1115Model(instant=True)
    bus.attach(ADDR, chip)
    for channel, volts in enumerate(pins):
        chip.set_input(channel, volts)
    positive, negative = mux.pins
    expected = pins[positive] - (0.0 if negative is None else pins[negative])
    expected = max(-pga, min(pga - lsb(pga), expected))  # the chip clips at full scale
    got = ADS1115(bus, ADDR).read_volts(mux, pga=pga, data_rate=860)
    assert abs(got - expected) <= lsb(pga)


def test_negative_differential_reading(adc: ADS1115, chip: ADS1115Model) -> None:
    chip.set_input(2, 0.25)
    chip.set_input(3, 1.75)
    assert adc.read_volts(Mux.DIFF_2_3, pga=2.048, data_rate=860) == pytest.approx(
        -1.5, abs=lsb(2.048)
    )


def test_full_scale_clips(adc: ADS1115, chip: ADS1115Model) -> None:
    chip.set_input(0, 3.0)
    assert adc.read_raw(Mux.AIN0, pga=2.048, data_rate=860) == 32767
    chip.set_input(0, 0.0)
    chip.set_input(1, 3.0)
    assert adc.read_raw(Mux.DIFF_0_1, pga=0.256, data_rate=860) == -32768


# -- the byte-order trap ------------------------------------------------------------------


def test_conversion_is_read_most_significant_byte_first(
    adc: ADS1115, chip: ADS1115Model, bus: EmulatedI2CBus
) -> None:
    """A driver that used SMBus read_word_data (little-endian) would get 0x3412 and 0xFEFF."""
    pga = 2.048
    chip.set_input(0, 0x1234 * lsb(pga))
    assert adc.read_raw(Mux.AIN0, pga=pga, data_rate=860) == 0x1234
    # The same register through a word read comes back byte-swapped: the trap itself.
    assert bus.read_word_data(ADDR, 0x00) == 0x3412

    chip.set_input(0, 0.0)
    chip.set_input(1, 2 * lsb(pga))
    assert adc.read_raw(Mux.DIFF_0_1, pga=pga, data_rate=860) == -2  # 0xFFFE, not 0xFEFF
    assert bus.read_word_data(ADDR, 0x00) == 0xFEFF


def test_config_is_written_most_significant_byte_first(adc: ADS1115, chip: ADS1115Model) -> None:
    adc.read_raw(Mux.AIN3, pga=0.512, data_rate=475)
    written = Config(Mux.AIN3, pga=0.512, data_rate=475).encode()
    assert chip.config == written  # a swapped write would have set another mux/pga/rate
    assert adc.read_config() == Config(Mux.AIN3, pga=0.512, data_rate=475, start=True)


# -- timing ------------------------------------------------------------------------------------


def test_model_conversion_takes_one_period_of_its_clock(bus: EmulatedI2CBus) -> None:
    now = [100.0]
    chip = bus.attach(ADDR, ADS1115Model(clock=lambda: now[0]))
    assert isinstance(chip, ADS1115Model)
    chip.set_input(1, 1.0)
    word = Config(Mux.AIN1, pga=2.048, data_rate=8, start=True).encode()
    bus.write_i2c_block_data(ADDR, 0x01, [word >> 8, word & 0xFF])
    assert bus.read_i2c_block_data(ADDR, 0x01, 2)[0] & 0x80 == 0  # converting
    now[0] += 0.124
    assert bus.read_i2c_block_data(ADDR, 0x01, 2)[0] & 0x80 == 0
    now[0] += 0.001  # 1/8 s in all
    assert bus.read_i2c_block_data(ADDR, 0x01, 2)[0] & 0x80 == 0x80
    hi, lo = bus.read_i2c_block_data(ADDR, 0x00, 2)
    assert (hi << 8 | lo) == 16000  # 1.0 V at ±2.048 V


def test_read_waits_for_a_real_time_conversion(bus: EmulatedI2CBus) -> None:
    chip = bus.attach(ADDR, ADS1115Model())  # 1/DR on time.monotonic
    assert isinstance(chip, ADS1115Model)
    chip.set_input(0, 0.5)
    start = time.monotonic()
    volts = ADS1115(bus, ADDR).read_volts(0, pga=1.024, data_rate=16)
    elapsed = time.monotonic() - start
    assert volts == pytest.approx(0.5, abs=lsb(1.024))
    assert 1 / 16 <= elapsed < conversion_timeout_s(16) + 0.5


def test_conversion_never_ready_raises_sensor_timeout(bus: EmulatedI2CBus) -> None:
    bus.attach(ADDR, ADS1115Model(clock=lambda: 0.0))  # its clock never moves: never done
    adc = ADS1115(bus, ADDR)
    start = time.monotonic()
    with pytest.raises(SensorTimeout) as caught:
        adc.read_raw(Mux.AIN0, data_rate=860)
    assert time.monotonic() - start < conversion_timeout_s(860) + 0.5
    assert isinstance(caught.value, TimeoutError)
    assert isinstance(caught.value, DriverError)
    assert isinstance(caught.value, TransientDriverError)


# -- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.EREMOTEIO, errno.ETIMEDOUT])
def test_bus_error_keeps_errno_then_recovers(adc: ADS1115, chip: ADS1115Model, code: int) -> None:
    chip.set_input(0, 1.0)
    chip.fail_next(1, code)
    with pytest.raises(BusError) as caught:
        adc.read_volts(0, data_rate=860)
    assert caught.value.errno == code
    assert isinstance(caught.value, OSError)
    assert isinstance(caught.value, TransientDriverError)
    assert adc.read_volts(0, data_rate=860) == pytest.approx(1.0, abs=lsb(2.048))


def test_fail_next_counts_transactions(adc: ADS1115, chip: ADS1115Model) -> None:
    chip.fail_next(2)  # the config write fails, then the next attempt's write fails too
    for _ in range(2):
        with pytest.raises(BusError):
            adc.read_raw(0, data_rate=860)
    adc.read_raw(0, data_rate=860)


@pytest.mark.parametrize("code", [errno.EREMOTEIO, errno.ETIMEDOUT])
def test_stop_answering_then_resume(adc: ADS1115, chip: ADS1115Model, code: int) -> None:
    chip.set_input(0, 2.0)
    chip.stop_answering(code)
    for _ in range(3):
        with pytest.raises(BusError) as caught:
            adc.read_volts(0, data_rate=860)
        assert caught.value.errno == code
    chip.resume()
    assert adc.read_volts(0, data_rate=860) == pytest.approx(2.0, abs=lsb(2.048))


def test_unplug_makes_the_address_vanish_and_plug_resets_the_chip(
    adc: ADS1115, chip: ADS1115Model, bus: EmulatedI2CBus
) -> None:
    chip.set_input(0, 1.0)
    adc.read_raw(Mux.AIN0, pga=4.096, data_rate=860)
    chip.unplug()
    assert ADDR not in bus.addresses
    with pytest.raises(BusError) as caught:
        adc.read_raw(0, data_rate=860)
    assert caught.value.errno == errno.EREMOTEIO
    chip.plug()
    assert chip.config == CONFIG_RESET & 0x7FFF  # powered up afresh
    assert adc.read_volts(0, data_rate=860) == pytest.approx(1.0, abs=lsb(2.048))


def test_missing_address_errno_follows_the_adapter() -> None:
    with pytest.raises(BusError) as caught:
        ADS1115(EmulatedI2CBus(), 0x49).read_raw(0)
    assert caught.value.errno == errno.EREMOTEIO  # i2c-bcm2835
    with pytest.raises(BusError) as caught:
        ADS1115(EmulatedI2CBus(missing_errno=errno.ENXIO), 0x49).read_raw(0)
    assert caught.value.errno == errno.ENXIO  # i2c-gpio and others


class _RegisterFile(EmulatedI2CDevice):
    """Some other chip at the ADS1115's address: 8-bit registers that never change."""

    def i2c_write(self, data: bytes) -> None:
        pass

    def i2c_read(self, length: int) -> bytes:
        return bytes(length)


def test_another_chip_at_the_address_is_a_protocol_error(bus: EmulatedI2CBus) -> None:
    bus.attach(ADDR, _RegisterFile())
    with pytest.raises(ProtocolError, match="reads back"):
        ADS1115(bus, ADDR).read_raw(0, data_rate=860)


def test_chip_reset_during_conversion_is_a_protocol_error(
    bus: EmulatedI2CBus, chip: ADS1115Model
) -> None:
    """A brown-out resets the config to 0x8583 (idle): never read its stale result as a level."""

    def brown_out(seconds: float) -> None:
        chip.power_on_reset()

    adc = ADS1115(bus, ADDR, sleep=brown_out)
    with pytest.raises(ProtocolError):
        adc.read_raw(Mux.AIN1, pga=4.096, data_rate=860)


def test_one_chip_shared_by_threads_keeps_conversions_apart(
    adc: ADS1115, chip: ADS1115Model
) -> None:
    chip.set_input(0, 0.5)
    chip.set_input(1, 1.5)
    errors: list[str] = []

    def reader(channel: int, expected: float) -> None:
        for _ in range(40):
            got = adc.read_volts(channel, data_rate=860)
            if abs(got - expected) > lsb(2.048):
                errors.append(f"AIN{channel}: {got}")

    threads = [threading.Thread(target=reader, args=a) for a in ((0, 0.5), (1, 1.5))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert adc.conversions == 80


def test_two_objects_for_one_chip_keep_conversions_apart(
    bus: EmulatedI2CBus, chip: ADS1115Model
) -> None:
    """Two probes that each built their own ADS1115 for the same chip must not interleave."""
    chip.set_input(2, 0.25)
    chip.set_input(3, 2.75)
    errors: list[BaseException] = []

    def reader(channel: int, expected: float) -> None:
        adc = ADS1115(bus, ADDR)
        try:
            for _ in range(40):
                assert abs(adc.read_volts(channel, pga=4.096, data_rate=860) - expected) < 0.001
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=a) for a in ((2, 0.25), (3, 2.75))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors


def test_an_int_channel_is_single_ended(adc: ADS1115, chip: ADS1115Model) -> None:
    chip.set_input(0, 0.2)
    chip.set_input(1, 1.2)
    assert adc.read_volts(1, data_rate=860) == pytest.approx(1.2, abs=lsb(2.048))  # not AIN0-AIN3


def test_closed_bus_is_ebadf(adc: ADS1115, bus: EmulatedI2CBus) -> None:
    bus.close()
    with pytest.raises(BusError) as caught:
        adc.read_raw(0)
    assert caught.value.errno == errno.EBADF


def test_smbus_limits_match_smbus2(bus: EmulatedI2CBus, chip: ADS1115Model) -> None:
    with pytest.raises(ValueError):
        bus.read_i2c_block_data(ADDR, 0, 33)
    assert bus.read_byte_data(ADDR, 0x03) == 0x7F  # hi_thresh MSB after reset
    bus.write_word_data(ADDR, 0x02, 0x1234)  # SMBus words go low byte first
    assert bus.read_i2c_block_data(ADDR, 0x02, 2) == [0x34, 0x12]


# -- the vendor backend ----------------------------------------------------------------------


def test_open_bus_wraps_a_missing_device_node() -> None:
    with pytest.raises(BusError) as caught:
        open_bus(250)
    assert caught.value.errno == errno.ENOENT
    assert "i2c-250" in str(caught.value)


def test_importing_the_driver_does_not_import_smbus2() -> None:
    code = "import sys, drivers.ads1115, drivers.pressure_probe; assert 'smbus2' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
