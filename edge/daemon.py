"""One lifecycle for every long-running component: settings, logging, signals and systemd notification.

A component tells systemd ``READY=1`` once it really works (models loaded and the broker connected, the web server
listening), ``WATCHDOG=1`` from its main loop (so a hung loop stops the pings and systemd restarts it), and
``STOPPING=1`` when it begins to stop. Outside systemd (no ``NOTIFY_SOCKET``) the notifications go nowhere.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable

import sdnotify

from edge.config import Settings, load_settings_or_exit
from edge.logs import setup_logging

# A process that stops because a restart was asked for exits with this (EX_TEMPFAIL): a failure to systemd, so
# ``Restart=on-failure`` starts it again (systemd does not restart a process killed by SIGHUP itself).
RESTART_EXIT = 75
# Without WatchdogSec (WATCHDOG_USEC unset) the main loop still ticks this often.
DEFAULT_TICK = 5.0


def watchdog_interval(environ: dict[str, str] | None = None) -> float:
    """Half the watchdog period systemd asks for (WATCHDOG_USEC), as its documentation recommends."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        usec = 0
    return usec / 2e6 if usec > 0 else DEFAULT_TICK


class Daemon:
    """The lifecycle of one component process."""

    def __init__(self, name: str, settings: Settings | None = None):
        self.name = name
        self.settings = settings or load_settings_or_exit()
        setup_logging(name, self.settings.log_level)
        self.log = logging.getLogger(f"facematch.{name}")
        self.stop_requested = threading.Event()
        self.restart_requested = False
        self.tick_interval = watchdog_interval()
        self._notifier = sdnotify.SystemdNotifier()

    def handle_signals(self) -> None:
        """SIGTERM and SIGINT ask the main loop to stop; SIGHUP asks for a restart: the same clean stop, then exit
        code :data:`RESTART_EXIT`, which systemd's ``Restart=on-failure`` (and ``facematch up``) start again
        (call from the main thread)."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self.restart_requested = True
            self.log.info("received SIGHUP: restarting")
        else:
            self.log.info("received %s: stopping", signal.Signals(signum).name)
        self.stop_requested.set()

    def exit_code(self, code: int = 0) -> int:
        """What the process exits with: ``code``, or :data:`RESTART_EXIT` when a restart was asked for."""
        return RESTART_EXIT if self.restart_requested else code

    def notify(self, state: str) -> None:
        self._notifier.notify(state)

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))
        self.log.info("ready%s", f": {status}" if status else "")

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def run(self, tick: Callable[[], None] | None = None) -> None:
        """The main loop: ``tick()`` then ``WATCHDOG=1``, every half watchdog period, until a stop is requested.

        A tick that hangs stops the pings, which is what the watchdog is for; a tick that raises is logged and the
        ping of that round is skipped.
        """
        while not self.stop_requested.is_set():
            try:
                if tick is not None:
                    tick()
                self.watchdog()
            except Exception:
                self.log.exception("main-loop check failed")
            self.stop_requested.wait(self.tick_interval)
        self.stopping()
