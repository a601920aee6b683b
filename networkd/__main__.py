import sys

from networkd.cli import main

sys.exit(main())
