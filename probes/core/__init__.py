"""The leaf of headlab: shared types, the probe protocol, the registry, hook names, errors and the
reductions several probe families share. It imports nothing else of headlab.

Submodules are imported by name (`from probes.core.types import Batch`); this file stays empty so
that torch-free code can import `probes.core.errors` without pulling in torch.
"""
