"""Detection, quality, alignment, embedding and anti-spoofing: pure functions and model wrappers."""
