"""``python -m eca_deploy``: the same command line as ``eca-deploy``."""

import sys

from .cli.main import main

sys.exit(main())
