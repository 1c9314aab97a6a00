"""Hooks that run inside the MLflow UI's server process (loaded through its logging configuration).

Why here: ``mlflow ui`` starts uvicorn in a process of its own; the one place we can reach it
is the ``--log-config`` file, whose filter factory below uvicorn imports before the app.
"""

from __future__ import annotations

import logging
import sys

#: MLflow's ERROR per artifact preview: the page first asks for a presigned URL, which a local
#: store cannot give, then downloads the artifact directly (the preview works).
KNOWN_NOISE = ("Presigned download is not supported",)


class KnownNoise(logging.Filter):
    """Drops log records that report nothing wrong (see ``KNOWN_NOISE``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in KNOWN_NOISE)


def known_noise() -> logging.Filter:
    """The filter, after marking MLflow's auth plugin absent (this server never runs it).

    Why: without Flask-WTF, every runs search tries ``import mlflow.server.auth`` and fails;
    meanwhile the Assistant panel finds the half-imported module in ``sys.modules`` and logs an
    ``AttributeError: partially initialized module 'mlflow.server.auth'`` traceback. ``None``
    there makes both see "no auth plugin" at once, as MLflow means for a server without one.
    """
    sys.modules.setdefault("mlflow.server.auth", None)
    return KnownNoise()
