import sys

from speeddata.cli import main

sys.exit(main())
