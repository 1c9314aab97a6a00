"""How an error is summarised in one line: what run summaries, status and the error tag show."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an error's message ('' if it has none).

    An error re-raised from a DataLoader worker starts with "Caught X in DataLoader worker
    process N." and names the bad file only on its last line: that line is shown instead.
    """
    lines = [line for line in str(error).strip().splitlines() if line.strip()] or [""]
    if lines[0].startswith("Caught ") and "Original Traceback" in str(error):
        last = lines[-1].strip().removeprefix(f"{type(error).__name__}: ")
        return f"{last} (in a DataLoader worker)"
    return lines[0]


def warn(message: str) -> None:
    """A warning for the person at the console, on stderr (layers below the CLI have no console of their own)."""
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)
