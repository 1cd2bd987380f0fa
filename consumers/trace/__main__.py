import sys

from consumers.trace.cli import main

sys.exit(main())
