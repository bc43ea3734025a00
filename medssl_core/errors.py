"""Errors that carry a message fit for the user: what is wrong and how to fix it."""


class MedsslError(Exception):
    """Base class: the CLI prints the message (no traceback) and exits with status 2."""


class DataError(MedsslError):
    """A dataset file is missing, corrupt, or does not match the registry."""


class StoreError(MedsslError):
    """The results database cannot be opened or written as asked."""


class ConfigError(MedsslError):
    """A study, profile, spec or command-line option is invalid."""
