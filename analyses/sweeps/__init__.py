"""Head-intervention sweeps: plans, their tasks, the resumable chunked runner, attribution."""
