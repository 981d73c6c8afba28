"""Analyses over stored results: the results store, summaries, the scan job and the CLI."""
