"""Text from outside (node names, annotations, run ids, result files) made safe for a terminal.

A node's annotation or a result file can carry ESC sequences that retitle a terminal, hide
lines or move the cursor. Every character that is not printable is shown escaped instead
(`\\x1b`, `\\u202e`); JSON and HTML outputs escape in their own way.
"""

from __future__ import annotations


def shortened(text: str, limit: int = 120) -> str:
    """A long value (a path of thousands of characters) cut in the middle, for one line."""
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 4 :]}"


def printable(text: object) -> str:
    """`text` with control and other non-printable characters escaped, as Python's repr escapes them."""
    shown = str(text)
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)
