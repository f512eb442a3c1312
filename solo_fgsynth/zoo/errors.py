"""Errors of the weight zoo; all derive from :class:`ZooError` so callers can catch one type."""

from __future__ import annotations

from solo_fgsynth.errors import UserError


class ZooError(UserError, RuntimeError):
    """Base class of every error the zoo raises on bad input, bad files or failed downloads.

    The command line reports each as one line and exit code 2 (see :mod:`solo_fgsynth.errors`).
    """


class ManifestError(ZooError):
    """The manifest file is missing, unreadable, or an entry breaks the schema."""


class UnknownModelError(ZooError, LookupError):
    """No manifest entry has the requested name; the message suggests close names."""


class DownloadError(ZooError):
    """No source of an entry delivered a file with the expected sha256."""


class OfflineError(ZooError):
    """Offline mode is on and the cache does not hold a verified copy of the file."""


class WeightsMismatchError(ZooError):
    """A weights file does not fit the backbone its manifest entry describes."""
