"""``python -m brubeck`` is the ``brubeck`` command."""

import sys

from .cli import main

sys.exit(main())
