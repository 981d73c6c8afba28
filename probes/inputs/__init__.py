"""What goes into a model: prompt suites and JSONL files, needle-in-a-haystack samples,
synthetic token sequences, prompts with and without a segment, image prompts."""
