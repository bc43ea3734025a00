"""Errors that carry a message fit for the user: what is wrong and how to fix it."""

import difflib


class MedsslError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with status 2."""


class DataError(MedsslError):
    """A dataset file is missing, corrupt, or does not match the registry."""


class StoreError(MedsslError):
    """The results database cannot be opened or written as asked."""


class ConfigError(MedsslError):
    """A study, profile, spec or command-line option is invalid."""


def did_you_mean(name: str, valid) -> str:
    """' Did you mean X?' naming the valid names closest to a misspelt ``name``; '' when none is close."""
    close = difflib.get_close_matches(name, [str(v) for v in valid], n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""
