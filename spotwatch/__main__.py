import sys

from spotwatch.cli import main

sys.exit(main())
