"""The bag tool's errors: one line each, naming the file and the problem."""

from __future__ import annotations


class BagError(Exception):
    """Any problem the bag tool reports to its user (the CLI prints it, exit code 2)."""


class BagInputError(BagError):
    """A missing, corrupt or truncated bag, a wrong or ambiguous topic, no transform."""


class BagOutputError(BagError):
    """The output exists, cannot be written, or a resume does not match the input."""
