"""``python -m audiokit`` runs the command line."""

import sys

from audiokit.cli import main

sys.exit(main())
