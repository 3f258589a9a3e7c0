"""The 26-bit Wiegand card format (HID H10301): what most panels expect from a reader.

Bits, first to last: even parity over the next 12, an 8-bit facility code, a 16-bit card number, odd parity over the
12 before it. Sent left-aligned in 4 bytes with a bit length of 26.
"""

from __future__ import annotations

BITS = 26
MAX_FACILITY = 0xFF
MAX_CARD = 0xFFFF


class WiegandError(ValueError):
    pass


def encode26(facility: int, card: int) -> bytes:
    if not 0 <= facility <= MAX_FACILITY:
        raise WiegandError(f"facility code {facility} does not fit 8 bits (0..{MAX_FACILITY})")
    if not 0 <= card <= MAX_CARD:
        raise WiegandError(f"card number {card} does not fit the 26-bit format's 16 bits (0..{MAX_CARD})")
    payload = (facility << 16) | card  # 24 bits
    first, second = payload >> 12, payload & 0xFFF
    even = bin(first).count("1") % 2  # makes the first 13 bits even
    odd = 1 - bin(second).count("1") % 2  # makes the last 13 bits odd
    bits = (even << 25) | (payload << 1) | odd
    return (bits << (32 - BITS)).to_bytes(4, "big")


def decode26(data: bytes) -> tuple[int, int]:
    """(facility, card) from 4 left-aligned bytes; raises when a parity bit is wrong."""
    bits = int.from_bytes(data[:4], "big") >> (32 - BITS)
    payload = (bits >> 1) & 0xFFFFFF
    first, second = payload >> 12, payload & 0xFFF
    if (bits >> 25) != bin(first).count("1") % 2 or (bits & 1) != 1 - bin(second).count("1") % 2:
        raise WiegandError("parity error")
    return payload >> 16, payload & 0xFFFF
