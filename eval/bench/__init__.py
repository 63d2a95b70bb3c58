"""Speed benchmarks (`fidec bench agents|data|eval`)."""
