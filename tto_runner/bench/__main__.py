"""python -m tto_runner.bench ..."""

import sys

from .cli import main

sys.exit(main())
