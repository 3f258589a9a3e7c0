"""The appliance as an OSDP reader (peripheral device) on an RS-485 line, through libosdp's maintained binding.

A granted walk-up reaches the access-control panel as a card read of the subject's card number, so that the panel's
own rules and audit apply. The secure channel is on: the reader's key (SCBK, 16 bytes) is made once, kept in a file
with mode 600 and entered on the panel when the reader is registered (``facematch door osdp-key`` prints it). The
panel's LED and buzzer commands are passed on (``on_indicator``) for the monitor to show.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.atomic import create_exclusive
from edge.door.wiegand import encode26

log = logging.getLogger("facematch.door")

KEY_BYTES = 16
LED_COLOURS = {0: "off", 1: "red", 2: "green", 3: "amber", 4: "blue", 5: "magenta", 6: "cyan", 7: "white"}


class OsdpError(Exception):
    pass


def load_or_create_key(path: Path) -> bytes:
    """The reader's secure-channel key: read from ``path``, or made and written there once (mode 600)."""
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) != KEY_BYTES:
            raise OsdpError(f"{path} does not hold a 16-byte key in hex")
        return key
    key = secrets.token_bytes(KEY_BYTES)
    create_exclusive(path, key.hex() + "\n")
    return key


def serial_channel(port: str, baud: int) -> Any:
    """An ``osdp.Channel`` over a serial port (a USB-RS485 adapter, or a pseudo-terminal in tests)."""
    import osdp
    import serial

    class SerialChannel(osdp.Channel):
        def __init__(self) -> None:
            super().__init__()
            try:
                self.port = serial.Serial(port, baud, timeout=0)
            except serial.SerialException as exc:
                raise OsdpError(f"cannot open {port}: {exc} (is the user in the dialout group?)") from None

        def read(self, max_bytes: int) -> bytes:
            return self.port.read(max_bytes)

        def write(self, buf: bytes) -> int:
            return self.port.write(buf) or 0

        def flush(self) -> None:
            self.port.flush()

    return SerialChannel()


class OsdpReader:
    def __init__(self, channel: Any, address: int, key: bytes, *, card_format: str = "wiegand26",
                 facility_code: int = 0, on_indicator: Callable[[dict[str, Any]], None] | None = None):  # fmt: skip
        import osdp

        self._osdp = osdp
        self.card_format = card_format
        self.facility_code = facility_code
        self.on_indicator = on_indicator
        capabilities = osdp.PDCapabilities([
            (osdp.Capability.CardDataFormat, 1, 1),
            (osdp.Capability.LEDControl, 1, 1),
            (osdp.Capability.AudibleControl, 1, 1),
            (osdp.Capability.CommunicationSecurity, 1, 1),
        ])  # fmt: skip
        info = osdp.PDInfo(address, channel, scbk=key, name="facematch")
        self._pd = osdp.PeripheralDevice(info, capabilities, log_level=osdp.LogLevel.Warning,
                                         command_handler=self._on_command)  # fmt: skip
        self.card_reads = 0

    def start(self) -> None:
        self._pd.start()

    @property
    def secure(self) -> bool:
        return bool(self._pd.is_sc_active())

    def _on_command(self, command: dict[str, Any]) -> tuple[int, dict | None]:
        osdp = self._osdp
        if command.get("command") == osdp.Command.LED and self.on_indicator:
            self.on_indicator({"kind": "led", "colour": LED_COLOURS.get(command.get("on_color", 0), "off"),
                               "seconds": command.get("timer_count", 0) / 10})  # fmt: skip
        elif command.get("command") == osdp.Command.Buzzer and self.on_indicator:
            self.on_indicator({"kind": "buzzer", "seconds": command.get("on_count", 0) / 10})
        return 0, None

    def card_read(self, card: int) -> bool:
        """Report ``card`` to the panel as read by this reader; False when the line is not up."""
        osdp = self._osdp
        if self.card_format == "ascii":
            event = {"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0, "format": osdp.CardFormat.ASCII,
                     "data": str(card).encode()}  # fmt: skip
        else:
            event = {"event": osdp.Event.CardRead, "reader_no": 0, "direction": 0, "format": osdp.CardFormat.Wiegand,
                     "length": 26, "data": encode26(self.facility_code, card)}  # fmt: skip
        submitted = bool(self._pd.submit_event(event))
        self.card_reads += int(submitted)
        return submitted

    def close(self) -> None:
        self._pd.stop()
