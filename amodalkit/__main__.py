"""``python -m amodalkit`` runs the CLI."""

import sys

from amodalkit.cli.app import main

sys.exit(main())
