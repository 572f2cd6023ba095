"""The consoles the command line prints on.

Output of a CLI is read by people and by scripts. Rich word-wraps at the width it detects, and when
stdout is a pipe that width is 80 columns (or ``COLUMNS``), so a phrase such as "skipped 1" or a path
could be split over two lines in a log, and whether it was depended on the length of the paths
printed. Soft wrap turns Rich's wrapping off: a line is printed whole and a terminal wraps it
visually, a pipe gets it intact. Tables still lay out at the detected width.
"""

from __future__ import annotations

from rich.console import Console


def cli_console(stderr: bool = False) -> Console:
    """A console that never inserts line breaks of its own into printed text."""
    return Console(stderr=stderr, soft_wrap=True)
