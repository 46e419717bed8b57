"""``python -m recgoat_cli`` = ``recgoat``."""
import sys

from recgoat_cli import main

sys.exit(main())
