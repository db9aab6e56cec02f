"""Benchmarks: scripts that print measured numbers (never pass/fail tests). Run as `python -m benchmarks.<name>`."""
