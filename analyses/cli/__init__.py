"""The `headlab` command line; kept free of torch imports so that --help is fast."""
