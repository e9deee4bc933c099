"""`python -m mixrt` runs the `mixrt` command (mixrt.cli)."""
import sys

from .cli import main

sys.exit(main())
