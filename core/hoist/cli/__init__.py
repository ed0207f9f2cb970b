"""Command-line faces of Hoist: ``hoistd``, ``dist`` and ``hoist``."""
