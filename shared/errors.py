"""Errors a user can act on. The CLI prints them as one line and exits non-zero."""


class RnnsuiteError(Exception):
    """Base class: the message alone tells the user what is wrong and where."""


class DataError(RnnsuiteError):
    """Unreadable, malformed or unusable input data; the message names the file and row."""


def problems_error(header: str, problems: list[str], most: int | None = 20) -> DataError:
    """One `DataError` naming every problem (the first `most` of them) under `header`, so
    that a user mends all bad files or rows in one go rather than one per run."""
    shown = problems if most is None else problems[:most]
    more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
    return DataError(f"{header}:\n  " + "\n  ".join(shown) + more)


class TrainingError(RnnsuiteError):
    """Training cannot go on (diverged, nothing to resume, wrong strategy)."""
