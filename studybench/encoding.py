"""Output on a console that cannot encode our characters (``PYTHONIOENCODING=ascii``, a C locale).

Why: run names are ``ce · unet · s0``; printing one to an ASCII stream raised
``UnicodeEncodeError`` after every run. Such streams now write a close ASCII spelling instead.
"""

from __future__ import annotations

import codecs
import sys
from typing import TextIO

#: ASCII spellings of the non-ASCII characters our messages use; any other character becomes "?".
ASCII_SPELLINGS = {"·": "-", "×": "x", "…": "...", "—": "-", "–": "-", "≥": ">=", "≤": "<=", "±": "+/-", "→": "->"}
ERRORS = "studybench-ascii"


def _spell(err: UnicodeError) -> tuple[str, int]:
    if not isinstance(err, UnicodeEncodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(ASCII_SPELLINGS.get(c, "?") for c in bad), err.end


codecs.register_error(ERRORS, _spell)


def fall_back_to_ascii(*streams: TextIO) -> None:
    """Make each stream whose encoding cannot write ``·`` spell such characters in ASCII instead of raising."""
    for stream in streams or (sys.stdout, sys.stderr):
        encoding = getattr(stream, "encoding", None) or "ascii"
        try:
            "·".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            reconfigure = getattr(stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(errors=ERRORS)
