"""``python -m scalecap``: the same as the ``scalecap`` command."""

from .cli import main

main()
