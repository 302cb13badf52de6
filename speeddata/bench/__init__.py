"""Benchmarks: real processes on loopback, figures printed, never asserted on."""
