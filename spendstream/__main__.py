import sys

from spendstream.cli import main

sys.exit(main())
