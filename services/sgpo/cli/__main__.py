"""`python -m sgpo.cli`: the same as the `sgpo` command."""

import sys

from sgpo.cli import main

# The guard matters: vLLM starts its engine processes with `spawn` where it must (CUDA initialised), and a
# spawned child imports this module again as `__mp_main__`; without the guard it would run the command again.
if __name__ == "__main__":
    sys.exit(main())
