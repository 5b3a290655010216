"""Timing harness and benchmarks."""
