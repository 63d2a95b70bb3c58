"""Data, not code: leaderboard presets (presets/*.yaml) and the paper's published tables (published/)."""
