"""One way to print numbers that recur everywhere (step counts)."""

from __future__ import annotations


def format_steps(steps: int) -> str:
    """1_500_000 -> '1.5M', 100_000 -> '100K', 2_500 -> '2.5K', 999 -> '999' (exact: '1234567' stays digits)."""
    steps = int(steps)
    for unit, size in (("M", 1_000_000), ("K", 1_000)):
        if abs(steps) >= size and steps % (size // 10) == 0:
            return f"{steps / size:g}{unit}"
    return str(steps)
