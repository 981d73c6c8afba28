"""Everything that touches a model: loading, hook names, probes, the streaming engine."""
