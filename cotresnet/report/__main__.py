"""`python -m cotresnet.report SWEEP_DIR`: the sweep report (cotresnet-report)."""
import sys

from .cli import main

sys.exit(main())
