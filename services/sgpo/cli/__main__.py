"""`python -m sgpo.cli`: the same as the `sgpo` command."""

import sys

from sgpo.cli import main

sys.exit(main())
