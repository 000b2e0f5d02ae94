import sys

from spotwatch.service.cli import main

sys.exit(main())
