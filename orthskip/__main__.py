import sys

from orthskip.cli import main

sys.exit(main())
