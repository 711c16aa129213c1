"""``python -m stcm`` runs the command-line interface."""
import sys

from stcm.cli import main

sys.exit(main())
