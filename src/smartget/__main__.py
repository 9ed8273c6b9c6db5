"""``python -m smartget``: the same as the ``smartget`` command."""

from smartget.cli import main

main()
