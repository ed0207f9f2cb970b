"""Hoist's error hierarchy, modelled on containerd's errdefs.

Every failure a user can see is one of these classes; the CLIs print ``str(err)`` on one line and
the gRPC layer maps each class to and from one status code.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator


class HoistError(Exception):
    """Base class of every error Hoist raises on purpose."""


class NotFoundError(HoistError):
    """The object (blob, image, plugin, snapshot, ...) does not exist."""


class AlreadyExistsError(HoistError):
    """The object already exists and the operation would create it."""


class InvalidArgumentError(HoistError, ValueError):
    """The caller passed something malformed (a digest, a reference, a filter, ...)."""


class FailedPreconditionError(HoistError):
    """The system is not in the state the operation needs (size or digest mismatch at commit, ...)."""


class UnavailableError(HoistError):
    """The resource is busy or unreachable right now (a locked ingest ref, a down registry); retry later."""


class UnsupportedError(HoistError):
    """The operation or format is understood but not supported (schema1 manifests, ...)."""


class OutOfRangeError(HoistError):
    """A read or write past the end of an object."""


class ConfigError(HoistError):
    """A configuration file or value is wrong; the message names the file, the key and what was expected."""


class PluginError(HoistError):
    """A plugin failed to load or initialise; ``uri`` names it."""

    def __init__(self, uri: str, message: str) -> None:
        super().__init__(f"{uri}: {message}")
        self.uri = uri


class PluginSkipped(HoistError):
    """Raised by a plugin's ``init`` to say it does not apply here (a kernel feature is missing, ...).

    The plugin is reported with status ``skip`` and the reason; nothing depending on it fails unless it
    needed exactly this plugin.
    """


class PluginDependencyError(PluginError):
    """A plugin could not start because a plugin it requires failed or is missing."""


@contextlib.contextmanager
def hiding(pattern: re.Pattern[str]) -> Iterator[None]:
    """Re-raise a Hoist error with every match of ``pattern`` removed from its message.

    For a view that prefixes the names it passes on (a namespace's ``ns/`` before a key or ref): the
    user sees their own names.  Errors of other types, or of classes with their own constructor, pass
    through unchanged.
    """
    try:
        yield
    except HoistError as e:
        text = str(e)
        shown = pattern.sub("", text)
        if shown == text or type(e).__init__ is not HoistError.__init__:
            raise
        raise type(e)(shown) from e


__all__ = [
    "hiding",
    "HoistError",
    "NotFoundError",
    "AlreadyExistsError",
    "InvalidArgumentError",
    "FailedPreconditionError",
    "UnavailableError",
    "UnsupportedError",
    "OutOfRangeError",
    "ConfigError",
    "PluginError",
    "PluginSkipped",
    "PluginDependencyError",
]
