import sys

from pkgtool.cli import main

sys.exit(main())
