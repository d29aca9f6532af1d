import sys

from sef.cli import main

sys.exit(main())
