"""`python -m analyses.cli ...` is `headlab ...`."""

import sys

from analyses.cli.main import main

sys.exit(main())
