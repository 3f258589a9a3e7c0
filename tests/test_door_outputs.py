"""Door outputs: the Wiegand format, the relay's timing and fail-secure logic, the door contact, and the appliance
as an OSDP reader end to end against libosdp's own control panel over a pseudo-terminal, with the secure channel."""

from __future__ import annotations

import os
import queue
import time
import tty
from pathlib import Path

import pytest

from edge.bus import Bus, Component
from edge.bus.messages import DoorCommand, DoorIndicator, new_event_id
from edge.door.relay import DoorContact, Relay
from edge.door.wiegand import WiegandError, decode26, encode26

osdp = pytest.importorskip("osdp")


# -- Wiegand --------------------------------------------------------------------------------------------------------


def test_wiegand26_round_trips_with_parity():
    for facility, card in ((0, 0), (1, 1), (12, 4242), (255, 65535), (128, 32768)):
        data = encode26(facility, card)
        assert len(data) == 4 and data[3] & 0x3F == 0  # 26 bits, left-aligned
        assert decode26(data) == (facility, card)
    flipped = bytearray(encode26(12, 4242))
    flipped[1] ^= 0x10
    with pytest.raises(WiegandError):
        decode26(bytes(flipped))
    with pytest.raises(WiegandError):
        encode26(0, 70000)  # does not fit 16 bits: refused, never truncated


# -- relay and contact ----------------------------------------------------------------------------------------------


class FakeLine:
    """The driver's interface without a GPIO chip: records each level and when it was set."""

    def __init__(self):
        self.values: list[bool] = []
        self.times: list[float] = []
        self.closed = False

    def set_active(self, active: bool) -> None:
        self.values.append(active)
        self.times.append(time.time())

    def close(self) -> None:
        self.closed = True


def test_the_relay_is_fail_secure_and_pulses_for_the_asked_time():
    line = FakeLine()
    relay = Relay(line)
    assert line.values == [False]  # driven inactive from the start
    relay.pulse(0.3)
    assert line.values[-1] is True and relay.active
    time.sleep(0.15)
    relay.pulse(0.4)  # a second grant extends the pulse...
    relay.pulse(0.05)  # ...a shorter one never shortens it
    time.sleep(0.3)
    assert line.values[-1] is True
    time.sleep(0.3)
    assert line.values[-1] is False and not relay.active
    relay.pulse(10)
    relay.close()  # stopping mid-pulse locks the door
    assert line.values[-1] is False and line.closed


def test_the_door_contact_reports_forced_and_held_open_doors():
    relay = Relay(FakeLine())
    clock = [0.0]
    contact = DoorContact(relay, held_open_seconds=5, now=lambda: clock[0])
    assert contact.on_change(True) == "door_forced"  # opened with no grant
    assert contact.on_change(False) == "door_closed"
    relay.pulse(2)
    assert contact.on_change(True) is None  # opened during a grant
    clock[0] = 6
    assert contact.on_tick() == "door_held_open" and contact.on_tick() is None  # said once
    relay.close()


GPIO_SIM = Path("/sys/kernel/config/gpio-sim")


@pytest.fixture
def gpio_sim():
    """A simulated GPIO chip (the kernel's gpio-sim, through configfs) with lines named ``relay`` and ``contact``:
    (the chip's /dev path, a function reading or pulling a line through the simulator's sysfs)."""
    if not GPIO_SIM.is_dir() or os.geteuid() != 0:
        pytest.skip("the kernel's gpio-sim is not available here (needs the gpio-sim module, configfs and root): the "
                    "relay's logic is tested above against the driver's interface")  # fmt: skip
    root = GPIO_SIM / f"facematch-{os.getpid()}"
    bank = root / "bank0"
    bank.mkdir(parents=True)
    (bank / "num_lines").write_text("2")
    for offset, name in enumerate(("relay", "contact")):
        (bank / f"line{offset}").mkdir()
        (bank / f"line{offset}" / "name").write_text(name)
    (root / "live").write_text("1")
    chip = (bank / "chip_name").read_text().strip()
    sim = Path("/sys/devices/platform") / (root / "dev_name").read_text().strip() / chip

    def line(offset: int, pull: str | None = None) -> str:
        if pull is not None:
            (sim / f"sim_gpio{offset}" / "pull").write_text(pull)
        return (sim / f"sim_gpio{offset}" / "value").read_text().strip()

    yield f"/dev/{chip}", line
    (root / "live").write_text("0")
    for offset in range(2):
        (bank / f"line{offset}").rmdir()
    bank.rmdir()
    root.rmdir()


def test_the_relay_and_the_contact_on_a_simulated_gpio_chip(gpio_sim):
    from edge.door.gpio import GpioInput, GpioOutput

    chip, line = gpio_sim
    relay = Relay(GpioOutput(chip, "relay"))
    assert line(0) == "0"  # requested inactive: fail-secure from the start
    relay.pulse(0.3)
    assert line(0) == "1"
    time.sleep(0.5)
    assert line(0) == "0"
    changes: queue.Queue = queue.Queue()
    contact = GpioInput(chip, "contact", changes.put)
    try:
        line(1, "pull-up")
        assert changes.get(timeout=2) is True
        line(1, "pull-down")
        assert changes.get(timeout=2) is False
    finally:
        contact.close()
    relay.pulse(10)
    relay.close()
    assert line(0) == "0"


# -- OSDP -----------------------------------------------------------------------------------------------------------


class MasterChannel(osdp.Channel):
    """The control panel's end of a pseudo-terminal (the reader opens the other end as its serial port)."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self, max_bytes: int) -> bytes:
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return b""

    def write(self, buf: bytes) -> int:
        return os.write(self.fd, buf)

    def flush(self) -> None:
        pass


@pytest.fixture
def panel_and_reader(settings, tmp_path):
    """A libosdp control panel on a pty's master, the door outputs' OSDP reader on its slave, and the bus."""
    from edge.door.osdp import OsdpReader, load_or_create_key, serial_channel
    from edge.door.service import DoorOutputs

    master, slave = os.openpty()
    tty.setraw(slave)
    key = load_or_create_key(tmp_path / "scbk.hex")
    assert (tmp_path / "scbk.hex").stat().st_mode & 0o777 == 0o600
    door_bus = Bus(settings, Component.DOOR)
    outputs = DoorOutputs(door_bus)
    reader = OsdpReader(serial_channel(os.ttyname(slave), 9600), 1, key, facility_code=12,
                        on_indicator=outputs.on_indicator)  # fmt: skip
    outputs.reader = reader
    outputs.start()
    assert door_bus.start(wait=5)
    events: queue.Queue = queue.Queue()
    info = osdp.PDInfo(1, MasterChannel(master), scbk=key, name="reader", flags=[osdp.LibFlag.EnforceSecure])
    panel = osdp.ControlPanel([info], log_level=osdp.LogLevel.Warning, event_handler=lambda pd, e: events.put(e) or 0)
    reader.start()
    panel.start()
    assert panel.sc_wait(1, timeout=10), "no secure channel between the panel and the reader"
    yield panel, reader, events, outputs
    panel.stop()
    reader.close()
    door_bus.stop()
    os.close(slave)
    os.close(master)


def test_a_granted_person_reaches_the_panel_as_their_card_over_the_secure_channel(settings, panel_and_reader):
    panel, reader, events, _ = panel_and_reader
    assert panel.is_sc_active(1) and reader.secure
    flow = Bus(settings, Component.INFERENCE)
    assert flow.start(wait=5)
    try:
        granted = DoorCommand(action="unlock", seconds=3, subject_id="s1", credential=4242, event_id=new_event_id())
        sent = time.perf_counter()
        flow.publish(flow.topics.door_command, granted.to_bytes(), qos=1)
        event = events.get(timeout=5)
        arrived = time.perf_counter() - sent
        assert event["event"] == osdp.Event.CardRead and event["format"] == osdp.CardFormat.Wiegand
        assert event["length"] == 26 and decode26(event["data"]) == (12, 4242)
        assert arrived < 0.5  # generous for CI; `facematch bench door` reports the real figure
        flow.publish(flow.topics.door_command, granted.to_bytes(), qos=1)  # redelivered: not a second read
        no_card = DoorCommand(action="unlock", seconds=3, subject_id="s2", event_id=new_event_id())
        flow.publish(flow.topics.door_command, no_card.to_bytes(), qos=1)  # a subject without a card number
        with pytest.raises(queue.Empty):
            events.get(timeout=1.0)
        assert reader.card_reads == 1
    finally:
        flow.stop()


def test_the_panels_led_command_reaches_the_display_state(settings, panel_and_reader):
    from display.state import DisplayModel

    panel, _, _, _ = panel_and_reader
    listener = Bus(settings, Component.DISPLAY)
    heard: queue.Queue = queue.Queue()
    listener.subscribe(listener.topics.door_indicator, heard.put)
    assert listener.start(wait=5)
    try:
        led = {"command": osdp.Command.LED, "reader": 0, "led_number": 0, "control_code": 1, "on_count": 5,
               "off_count": 5, "on_color": osdp.CommandLEDColor.Green, "off_color": osdp.CommandLEDColor.Black,
               "timer_count": 30, "temporary": True}  # fmt: skip
        assert panel.submit_command(1, led)
        indicator = DoorIndicator.model_validate_json(heard.get(timeout=5).payload)
        assert indicator.kind == "led" and indicator.colour == "green" and indicator.seconds == pytest.approx(3.0)
        model = DisplayModel()
        model.on_indicator(indicator, now=0.0)
        assert model.screen(1.0).indicator == "green" and model.screen(4.0).indicator is None
    finally:
        listener.stop()


def test_the_reader_key_is_made_once_and_kept(tmp_path):
    from edge.door.osdp import load_or_create_key

    first = load_or_create_key(tmp_path / "k.hex")
    assert len(first) == 16 and load_or_create_key(tmp_path / "k.hex") == first


def test_a_granted_walk_up_reaches_mqtt_and_the_panel_within_100_ms(make_device, data_dir, panel_and_reader):
    """The device-mode demo's grant: events/access, then the MQTT door command and the card read at the panel."""
    from tests.devicekit import FACE_THEN_NONE, frame_of

    panel, _, events, outputs = panel_and_reader
    line = FakeLine()  # the relay's path through the door process, on the driver's interface (no GPIO chip here)
    outputs.relay = Relay(line)
    device = make_device(FACE_THEN_NONE, challenge=False)
    sid = device.enroll("Face Video", frame_of(data_dir / FACE_THEN_NONE, 10))
    device.store.client.hset(f"fm:subject:{sid}", "credential", 777)  # as enrolment with credential=777 would
    device.start_flow()
    device.start_camera()
    access = device.wait_for("/events/access")
    command = device.wait_for("/door/command")
    card = events.get(timeout=5)
    card_at = time.time()
    assert DoorCommand.model_validate_json(command.payload).credential == 777
    assert decode26(card["data"]) == (12, 777) and panel.is_sc_active(1)
    assert command.received - access.received < 0.1
    assert card_at - access.received < 0.1 + 0.05  # + the test's own queue hand-off
    assert line.values[-1] is True and line.times[-1] - access.received < 0.1  # the pulse is on
    outputs.relay.close()


def test_the_osdp_key_command_makes_the_key_once_and_prints_it(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "FACEMATCH_STATE_DIR": str(tmp_path)}
    root = Path(__file__).resolve().parent.parent
    first = subprocess.run([sys.executable, "-m", "edge.cli", "door", "osdp-key"], env=env, cwd=root,
                           capture_output=True, text=True, check=True)  # fmt: skip
    again = subprocess.run([sys.executable, "-m", "edge.cli", "door", "osdp-key"], env=env, cwd=root,
                           capture_output=True, text=True, check=True)  # fmt: skip
    key = (tmp_path / "osdp-scbk.hex").read_text().strip().upper()
    assert first.stdout.startswith("created") and again.stdout.startswith("kept")
    assert first.stdout.split()[-1] == again.stdout.split()[-1] == key and len(key) == 32


def test_a_denied_walk_up_never_reaches_the_panel(make_device, panel_and_reader):
    from edge.bus.messages import AccessEvent
    from tests.devicekit import FACE_THEN_NONE

    _, reader, events, _ = panel_and_reader
    device = make_device(FACE_THEN_NONE, challenge=False)  # nobody enrolled: the walk-up is "unknown"
    device.start_flow()
    device.start_camera()
    assert AccessEvent.model_validate_json(device.wait_for("/events/access").payload).decision == "unknown"
    with pytest.raises(queue.Empty):
        events.get(timeout=1.0)
    assert reader.card_reads == 0
