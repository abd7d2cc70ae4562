"""``python -m tidings``: the ``tidings`` command, as ``serve --workers`` starts its workers."""

from tidings.cli import main

main()
