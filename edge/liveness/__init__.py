"""The eye-tracking challenge: sequence generation and gaze-sequence validation. Pure code, no I/O."""
