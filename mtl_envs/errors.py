"""The one error type for bad user input."""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad value, an unknown name or an unknown key given by the user: an argument, a config
    field, a registry name. The message names the argument, the bad value and the valid
    choices (with a "did you mean" where one is close). Anything else raised is a bug."""
