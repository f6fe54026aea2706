"""``python -m amodalkit`` runs the CLI."""

import sys

from amodalkit.cli import main

sys.exit(main())
