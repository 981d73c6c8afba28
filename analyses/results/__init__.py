"""torch-free: the results store, run provenance and summaries of stored runs."""
