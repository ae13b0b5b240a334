"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class RnnsuiteError(Exception):
    """Base class: the message alone tells the user what is wrong and where."""


class DataError(RnnsuiteError):
    """Unreadable, malformed or unusable input data; the message names the file and row."""


class TrainingError(RnnsuiteError):
    """Training cannot go on (diverged, nothing to resume, wrong strategy)."""
