"""The run report: `build` makes it from a run's checkpoints, `model` is its typed shape and report.json."""
