"""The one exception a user can act on when a dataset, archive or cache file is unusable.

A loader that fails deep inside a 100k-image loop must say three things, or the user is left
reading a traceback: *which file* (for an archive, the archive and the member inside it), *what is
wrong* with it, and *what to do*. [`DataError`][] carries the three as attributes and joins
them into its message, so the command line can catch this one type and print one line.

It subclasses ``ValueError`` (a bad input, as before), and [`MissingDataError`][] also
subclasses ``FileNotFoundError``, so code that caught those still catches these.
"""

from __future__ import annotations

import os


class DataError(ValueError):
    """A dataset file is missing, damaged or malformed; the message names it and the remedy.

    The message reads ``<member> in <archive>: <problem>; <remedy>`` (``<path>: ...`` without a
    member), on one line, so a command line can print it alone; the parts stay attributes.

    Args:
        path: the file, or the archive that holds ``member``.
        problem: what is wrong, in a few words (``"missing dataset file"``).
        remedy: what the user can do (``"delete it and download it again"``).
        member: the file inside the archive ``path``, or None for a plain file.

    Examples:
        >>> from frlr.data import DataError
        >>> error = DataError("data.zip", "damaged", "download it again", member="a/1.png")
        >>> print(error)
        a/1.png in data.zip: damaged; download it again
        >>> error.path, error.member
        ('data.zip', 'a/1.png')
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        remedy: str,
        *,
        member: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.member = member
        self.problem = _one_line(problem)
        self.remedy = _one_line(remedy)
        super().__init__(self._message())

    def _message(self) -> str:
        return f"{self.location}: {self.problem}; {self.remedy}"

    @property
    def location(self) -> str:
        """The member and its archive, or the file alone."""
        if self.member is None:
            return self.path
        return f"{self.member} in {self.path}"

    def __reduce__(self) -> tuple[object, ...]:
        # Default pickling would call __init__(message); keep the fields (DDP workers pickle it).
        return (_rebuild, (type(self), self.path, self.problem, self.remedy, self.member))


class MissingDataError(DataError, FileNotFoundError):
    """A dataset file or folder is not where it is looked for (also a ``FileNotFoundError``).

    Args:
        path: the file or folder looked for, or the archive that lacks ``member``.
        problem: what is missing.
        remedy: how to get it (``"pass download=True to fetch it"``).
        member: the file the archive ``path`` lacks, or None.

    Examples:
        >>> import tempfile
        >>> from frlr.data import MissingDataError, load_dataset
        >>> try:
        ...     load_dataset("cifar10", "train", tempfile.mkdtemp())
        ... except MissingDataError as error:
        ...     print(isinstance(error, FileNotFoundError), error.remedy)
        True pass download=True to fetch it
    """


def _rebuild(
    kind: type[DataError], path: str, problem: str, remedy: str, member: str | None
) -> DataError:
    return kind(path, problem, remedy, member=member)


def _one_line(text: str) -> str:
    """Collapse whitespace runs (a library's multi-line message) so the error stays one line."""
    return " ".join(str(text).split())


REDOWNLOAD = "delete it and download it again (or extract it again from a good copy)"
"""The remedy for a damaged archive or file that came from an official download."""
