"""Everything above the probes: results, interventions, sweeps, jobs and the command line.

results/        torch-free: the results store, run provenance, summaries
interventions/  head edits as value objects that emit hooks; mean head outputs
sweeps/         plans of interventions, their tasks, the resumable runner
jobs/           scan, retrieval masking, induction check, bench: each run(config)
cli/            the `headlab` verbs over the jobs
"""
