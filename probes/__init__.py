"""Everything that touches a model: loading, hook names, the probe protocol, the engine, probe families."""
