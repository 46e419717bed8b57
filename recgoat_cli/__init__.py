"""The ``recgoat`` command line (``recgoat = recgoat_cli:main``).

- :mod:`recgoat_cli.parser` -- the parser and the dispatch; the standard library only, so ``recgoat --help``
  is instant;
- :mod:`recgoat_cli.commands` -- the commands (``cmd_run``, ``cmd_bench``, ...), imported once the arguments
  are parsed; they load RecBole and torch through :mod:`recgoat_recbole`;
- :mod:`recgoat_cli.errors` -- :class:`UserError`, what a command raises for a mistake the user can fix.

Nothing in :mod:`recgoat_recbole` or :mod:`recgoat_core` imports this package.
"""

from recgoat_cli.errors import UserError
from recgoat_cli.parser import build_parser, main

__all__ = ["main", "build_parser", "UserError"]
