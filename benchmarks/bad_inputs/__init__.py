"""The bad-input survey (run `python -m benchmarks.bad_inputs --help`)."""
