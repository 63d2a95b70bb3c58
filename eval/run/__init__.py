"""One training run: its configuration, the trainer loop, checkpoints, evaluation, videos, loggers and the reported
score."""
