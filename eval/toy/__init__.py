"""The toy-landscape study: runner, metrics, claims and figures."""
