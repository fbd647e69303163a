"""`python -m odyssey ...` runs the command line, as the `odyssey` script does."""

import sys

from odyssey.cli import main

sys.exit(main())
