"""Jobs: each an importable run(config) that the CLI wraps."""
