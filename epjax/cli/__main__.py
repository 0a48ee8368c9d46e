"""``python -m epjax.cli``: the same as the ``epjax`` console script."""

import sys

from epjax.cli import main

sys.exit(main())
