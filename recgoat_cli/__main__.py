"""``python -m recgoat_cli`` = ``recgoat``."""
import sys

from recgoat_cli.parser import main

sys.exit(main())
