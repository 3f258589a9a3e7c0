"""Benchmark commands (``facematch bench ...``, ``facematch calibrate``): they print figures, they assert nothing."""
