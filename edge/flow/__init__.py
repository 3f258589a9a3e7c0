"""The live door flow's rules, without I/O: when a walk-up starts, and what ends a challenge early."""
