"""Errors a user can cause, with messages that say what to fix."""


class OrthskipError(Exception):
    """Base class: the CLI prints these without a traceback."""


class ConfigError(OrthskipError, ValueError):
    """A config value is missing, misspelt or out of range (names the key and allowed values)."""


class DatasetError(OrthskipError, FileNotFoundError):
    """A dataset file is missing or corrupt (names the path and what to do)."""
