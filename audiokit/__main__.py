"""``python -m audiokit`` runs the command line."""

from audiokit.cli import run

run()
