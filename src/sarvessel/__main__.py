"""``python -m sarvessel`` is the ``sarvessel`` command."""

import sys

from sarvessel.cli import main

sys.exit(main())
