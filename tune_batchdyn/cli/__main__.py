import sys

from tune_batchdyn.cli import main

sys.exit(main())
