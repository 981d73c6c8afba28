"""The analysis notebooks, committed executed; `python -m notebooks.refresh` runs them in place."""
