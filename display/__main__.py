"""``python -m display``: the challenge display, full screen on the attached monitor, until SIGTERM.

SDL chooses the video driver: X11 or Wayland under a desktop session, KMS/DRM on a console without one
(``SDL_VIDEODRIVER=kmsdrm``), ``offscreen`` for tests. The display records when each highlight was really drawn and
publishes it on ``display/timing`` (``facematch bench live`` compares it with the schedule).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from display.state import DisplayModel, Kind, Screen
from edge import clock
from edge.bus import Bus, Component, Presence
from edge.bus.client import Message
from edge.bus.messages import (
    AccessEvent,
    ChallengeEnd,
    ChallengeStart,
    DoorIndicator,
    GazeCalibrationEvent,
    HighlightDrawn,
    Stats,
)
from edge.daemon import Daemon

WATCHDOG_EVERY = 1.0
# A screen that has not changed is not drawn again (an idle screen drawn 60 times a second cost a third of a core of a
# 2-core board), except this often, in case a compositor or a console switch lost it.
REDRAW_EVERY = 1.0


class Display:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.settings = daemon.settings.display
        self.model = DisplayModel()
        self.lock = threading.Lock()
        self.bus = Bus(daemon.settings, Component.DISPLAY)
        self.presence = Presence(self.bus)
        topics = self.bus.topics
        self.bus.subscribe(topics.challenge_start, self._on(ChallengeStart, self.model.on_start))
        self.bus.subscribe(topics.challenge_end, self._on(ChallengeEnd, self.model.on_end))
        self.bus.subscribe(topics.event_filter, self._on_event)
        self.bus.subscribe(topics.door_indicator, self._on_indicator)
        self.shots: set[str] = set()

    def _on(self, kind: type, handler):
        def receive(message: Message) -> None:
            if message.retain:
                return
            with self.lock:
                handler(kind.model_validate_json(message.payload))

        return receive

    def _on_event(self, message: Message) -> None:
        if message.retain:
            return
        if message.topic.endswith("/events/access"):
            with self.lock:
                self.model.on_access(AccessEvent.model_validate_json(message.payload), clock.now())
        elif message.topic.endswith("/events/calibration"):
            with self.lock:
                self.model.on_calibration(GazeCalibrationEvent.model_validate_json(message.payload), clock.now())

    def _on_indicator(self, message: Message) -> None:
        if not message.retain:
            with self.lock:
                self.model.on_indicator(DoorIndicator.model_validate_json(message.payload), clock.now())

    def run(self) -> None:
        import pygame

        from display.render import Renderer

        pygame.display.init()
        pygame.font.init()
        flags = pygame.FULLSCREEN if self.settings.fullscreen else 0
        size = (0, 0) if self.settings.fullscreen else (self.settings.width, self.settings.height)
        surface = pygame.display.set_mode(size, flags)
        pygame.display.set_caption("facematch")
        pygame.mouse.set_visible(False)
        renderer = Renderer(surface)
        self.bus.start(wait=10)
        self.daemon.ready(f"{surface.get_width()}x{surface.get_height()} on SDL {pygame.display.get_driver()}")
        ticker = pygame.time.Clock()
        last_ping, shown, on_screen, last_draw = 0.0, None, None, 0.0
        counts, counting_since = {"loops": 0, "drawn": 0}, time.monotonic()
        while not self.daemon.stop_requested.is_set():
            exposed = False
            for event in pygame.event.get():
                if event.type == pygame.QUIT:
                    self.daemon.stop_requested.set()
                exposed = exposed or event.type in (pygame.VIDEOEXPOSE, pygame.VIDEORESIZE, pygame.WINDOWEXPOSED)
            self._wait_for_boundary(1.0 / self.settings.fps)
            with self.lock:
                self.model.on_presence("inference", bool(self.presence.online(Component.INFERENCE)))
                self.model.on_presence("camera", bool(self.presence.online(Component.CAMERA)))
                screen = self.model.screen(clock.now())
                challenge = self.model.challenge
            if screen != on_screen or exposed or time.monotonic() - last_draw >= REDRAW_EVERY:
                renderer.draw(screen)
                pygame.display.flip()
                drawn = clock.now()
                if screen.lit_cell != shown and screen.lit_cell is not None and challenge is not None:
                    self._report_highlight(challenge, screen, drawn)
                shown, on_screen, last_draw = screen.lit_cell, screen, time.monotonic()
                self._screenshot(surface, screen)
                counts["drawn"] += 1
            counts["loops"] += 1
            if time.monotonic() - counting_since >= self.settings.stats_interval:
                self._report_stats(counts, time.monotonic() - counting_since)
                counts, counting_since = dict.fromkeys(counts, 0), time.monotonic()
            if time.monotonic() - last_ping >= min(WATCHDOG_EVERY, self.daemon.tick_interval):
                self.daemon.watchdog()
                last_ping = time.monotonic()
            ticker.tick(self.settings.fps)
        self.daemon.stopping()
        self.bus.stop()
        pygame.quit()

    def _wait_for_boundary(self, frame: float) -> None:
        """A window that starts before the next frame would be drawn up to a frame late: wait for its start instead,
        so that the highlight appears on the schedule (not on the frame clock's next tick)."""
        with self.lock:
            challenge = self.model.challenge
        if challenge is None:
            return
        now = clock.now()
        upcoming = [w.start for w in challenge.windows if now < w.start <= now + frame]
        if upcoming:
            time.sleep(max(0.0, upcoming[0] - now))

    def _report_highlight(self, challenge: ChallengeStart, screen: Screen, drawn: float) -> None:
        index = next(i for i, w in enumerate(challenge.windows) if w.cell == screen.lit_cell and w.start <= drawn)
        report = HighlightDrawn(session_id=challenge.session_id, index=index, cell=screen.lit_cell or 0,
                                scheduled=challenge.windows[index].start, drawn=drawn)  # fmt: skip
        self.bus.publish(self.bus.topics.display_timing, report.to_bytes(), qos=0)

    def _report_stats(self, counts: dict[str, int], elapsed: float) -> None:
        figures = {"drawn_fps": counts["drawn"] / elapsed, "loop_fps": counts["loops"] / elapsed}
        stats = Stats(component=Component.DISPLAY, instance=self.bus.instance, figures=figures)
        self.bus.publish(self.bus.topics.stats, stats.to_bytes(), qos=0)

    def _screenshot(self, surface, screen: Screen) -> None:
        """With ``display.screenshot_dir``: the first frame of each kind of screen (and of a lit grid), as PNG."""
        folder = self.settings.screenshot_dir
        if folder is None:
            return
        name = "challenge-lit" if screen.kind is Kind.CHALLENGE and screen.lit_cell else screen.kind.value
        if screen.title.startswith("Calibration"):
            name = f"calibration-{name}"
        if name in self.shots:
            return
        import pygame

        Path(folder).mkdir(parents=True, exist_ok=True)
        pygame.image.save(surface, str(Path(folder) / f"display-{name}.png"))
        self.shots.add(name)


def main() -> int:
    daemon = Daemon("display")
    daemon.handle_signals()
    try:
        Display(daemon).run()
    except Exception as exc:  # SDL cannot open a screen: say so once, clearly
        daemon.log.error("the display cannot start: %s (SDL_VIDEODRIVER=kmsdrm without a desktop; see DEPLOY.md)", exc)
        return 3
    return daemon.exit_code()


if __name__ == "__main__":
    sys.exit(main())
