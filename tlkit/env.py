"""Every ``TLKIT_*`` environment variable the library reads, checked in one place.

A bad value raises :class:`EnvironmentSettingError` (a ValueError) whose
message names the variable, its value and what it should be, whether or not
the code that needs it runs this time (the command line checks them all
first, so a bad ``TLKIT_NUM_WORKERS`` is reported even when the features come
from the cache).

========================  ======================================================
``TLKIT_DATA_DIR``        folder holding the datasets (may not exist yet)
``TLKIT_CACHE_DIR``       folder for feature caches (may not exist yet)
``TLKIT_NUM_WORKERS``     DataLoader worker processes, a whole number >= 0
``TLKIT_CPU_BF16``        0/1: bf16 inference on CPUs with native bf16 (default 1)
``TLKIT_BINDER``          0/1: behave as on Binder (no worker processes)
``TLKIT_DEBUG``           0/1: the command line shows tracebacks for every error
``TLKIT_ENGINE``          auto/torch/onnxruntime: the engine of the frozen pass (overrides the argument)
========================  ======================================================

Example:
    >>> env_int("TLKIT_NUM_WORKERS")  # None when unset
    >>> check_environment()  # EnvironmentSettingError for the first bad value
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["VARIABLES", "EnvironmentSettingError", "check_environment", "env_choice", "env_flag", "env_folder",
           "env_int"]

VARIABLES = {"TLKIT_DATA_DIR": "folder", "TLKIT_CACHE_DIR": "folder", "TLKIT_NUM_WORKERS": "count",
             "TLKIT_CPU_BF16": "flag", "TLKIT_BINDER": "flag", "TLKIT_DEBUG": "flag",
             "TLKIT_ENGINE": ("auto", "torch", "onnxruntime")}
_FLAGS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


class EnvironmentSettingError(ValueError):
    """A ``TLKIT_*`` environment variable with a value tlkit cannot use; the message names it."""


def env_int(name: str, minimum: int = 0) -> int | None:
    """The variable as a whole number >= ``minimum``, None when unset or empty.

    Example:
        >>> os.environ["TLKIT_NUM_WORKERS"] = "-3"; env_int("TLKIT_NUM_WORKERS")
        EnvironmentSettingError: TLKIT_NUM_WORKERS='-3' must be a whole number of at least 0 ...
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise EnvironmentSettingError(f"{name}={raw!r} must be a whole number of at least {minimum} "
                                      f"(e.g. {name}={minimum}); fix it or unset it.")
    return value


def env_flag(name: str, default: bool) -> bool:
    """The variable as on/off (1/0, true/false, yes/no, on/off); ``default`` when unset or empty."""
    raw = _one_of(name, tuple(_FLAGS), "1 or 0 (or true/false)")
    return default if raw is None else _FLAGS[raw]


def env_folder(name: str) -> Path | None:
    """The variable as a folder path (``~`` expanded), None when unset; it may not exist yet,
    but it must not be a file."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise EnvironmentSettingError(f"{name}={raw} is a file, not a folder. Set {name} to a folder "
                                      "(it is created if missing), or unset it.")
    return path


def env_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """The variable as one of ``choices`` (case-insensitive), None when unset or empty.

    Example:
        >>> os.environ["TLKIT_ENGINE"] = "torch"; env_choice("TLKIT_ENGINE", ("auto", "torch"))
        'torch'
    """
    return _one_of(name, choices, "one of " + ", ".join(choices))


def _one_of(name: str, choices: tuple[str, ...], what: str) -> str | None:
    """The variable, lower-cased, if it is one of ``choices``; None when unset or empty."""
    raw = os.environ.get(name, "").strip().lower()
    if raw and raw not in choices:
        raise EnvironmentSettingError(f"{name}={os.environ[name]!r} must be {what}; fix it or unset it.")
    return raw or None


def check_environment() -> None:
    """Checks every variable in ``VARIABLES``; EnvironmentSettingError for the first bad one."""
    for name, kind in VARIABLES.items():
        if kind == "folder":
            env_folder(name)
        elif kind == "count":
            env_int(name)
        elif isinstance(kind, tuple):
            env_choice(name, kind)
        else:
            env_flag(name, default=False)
