"""Many runs: leaderboard presets, the grid runner (local processes or Ray) and the quickstart."""
