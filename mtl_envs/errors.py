"""The one error type for bad user input."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad value, an unknown name or an unknown key given by the user: an argument, a config
    field, a registry name. The message names the argument, the bad value and the valid
    choices (with a "did you mean" where one is close). Anything else raised is a bug."""


class PathNotFoundError(ConfigError, FileNotFoundError):
    """A path the user gave (a config or sweep file, a result folder, a dataset, a gain
    table) does not exist. It is bad input like any other, so a ``ConfigError``, and also
    the ``FileNotFoundError`` Python code expects of a missing file."""
