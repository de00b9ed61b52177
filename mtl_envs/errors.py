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


class RenderModeError(ConfigError, TypeError):
    """A ``render_mode`` the envs do not draw (they have ``"ansi"`` only). Also a
    ``TypeError``, which is what a constructor raises for an argument it does not take:
    Stable-Baselines3 asks ``gym.make(env_id, render_mode="rgb_array")`` first and, on a
    ``TypeError``, builds the env without one, so ``PPO("MlpPolicy", env_id)`` and
    ``make_vec_env(env_id)`` work on these ids."""


class MissingDependencyError(ConfigError, ImportError):
    """An option that needs an optional package which is not installed (``backend: ray``
    without Ray): a choice the user made, so a ``ConfigError`` saying what to install, and
    the ``ImportError`` Python code expects."""
