"""Draw a :class:`display.state.Screen` with pygame-ce (SDL: X11, Wayland, KMS/DRM, or offscreen for tests)."""

from __future__ import annotations

import math

import pygame

from display.state import Kind, Screen

BACKGROUND = (15, 20, 25)
TEXT = (232, 238, 242)
MUTED = (150, 160, 170)
CELL = (27, 35, 43)
LIT = (245, 197, 66)
GRANTED = (63, 182, 139)
DENIED = (224, 86, 91)
ROWS, COLUMNS = 2, 3
INDICATOR_COLOURS = {"red": (224, 86, 91), "green": (63, 182, 139), "amber": (245, 166, 35), "blue": (66, 133, 244),
                     "magenta": (200, 80, 200), "cyan": (80, 200, 220), "white": (240, 240, 240)}  # fmt: skip


class Renderer:
    def __init__(self, surface: pygame.Surface):
        self.surface = surface
        height = surface.get_height()
        self.title_font = pygame.font.Font(None, max(24, height // 9))
        self.detail_font = pygame.font.Font(None, max(18, height // 16))
        self.big_font = pygame.font.Font(None, max(48, height // 3))

    def cell_rect(self, cell: int) -> pygame.Rect:
        """The cell's rectangle: the grid fills the screen below a title band, with gaps between cells."""
        width, height = self.surface.get_size()
        top, gap = height // 8, max(6, width // 80)
        cell_w = (width - gap * (COLUMNS + 1)) // COLUMNS
        cell_h = (height - top - gap * (ROWS + 1)) // ROWS
        row, column = (cell - 1) // COLUMNS, (cell - 1) % COLUMNS
        return pygame.Rect(gap + column * (cell_w + gap), top + gap + row * (cell_h + gap), cell_w, cell_h)

    def _text(self, text: str, font: pygame.font.Font, colour: tuple[int, int, int], centre: tuple[int, int]) -> None:
        rendered = font.render(text, True, colour)
        self.surface.blit(rendered, rendered.get_rect(center=centre))

    def draw(self, screen: Screen) -> None:
        self._draw(screen)
        if screen.indicator in INDICATOR_COLOURS:
            width, height = self.surface.get_size()
            pygame.draw.rect(self.surface, INDICATOR_COLOURS[screen.indicator], (0, 0, width, height), 8)

    def _draw(self, screen: Screen) -> None:
        width, height = self.surface.get_size()
        self.surface.fill(BACKGROUND)
        if screen.kind in (Kind.CHALLENGE, Kind.COUNTDOWN):
            for cell in range(1, ROWS * COLUMNS + 1):
                pygame.draw.rect(self.surface, LIT if cell == screen.lit_cell else CELL, self.cell_rect(cell),
                                 border_radius=12)  # fmt: skip
            self._text(screen.title, self.detail_font, TEXT, (width // 2, height // 16))
            if screen.progress is not None:
                pygame.draw.rect(self.surface, GRANTED, (0, height - 6, int(width * screen.progress), 6))
            if screen.kind is Kind.COUNTDOWN and screen.countdown is not None:
                self._text(str(math.ceil(screen.countdown)), self.big_font, LIT, (width // 2, height // 2))
            return
        if screen.kind is Kind.RESULT:
            colour = GRANTED if screen.granted else DENIED
            pygame.draw.rect(self.surface, colour, (0, 0, width, height // 10))
            self._text(screen.title, self.title_font, colour, (width // 2, height * 2 // 5))
        else:
            self._text(screen.title, self.title_font, TEXT, (width // 2, height * 2 // 5))
        self._text(screen.detail, self.detail_font, MUTED, (width // 2, height * 3 // 5))
