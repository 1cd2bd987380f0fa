import sys

from postback_pipeline.cli import main

sys.exit(main())
