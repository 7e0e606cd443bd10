"""`python -m t5x_lite` is the `t5x-lite` command."""

import sys

from t5x_lite.cli.main import main

sys.exit(main())
