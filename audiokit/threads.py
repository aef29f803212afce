"""The torch thread counts audiokit takes: one limit for the commands and the speed scripts."""

MAX_THREADS = 1024
"""The most torch threads a command or a speed script takes (torch overflows on far larger counts)."""
