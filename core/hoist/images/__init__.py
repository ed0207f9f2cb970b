"""Images: media types, strict document parsing, platform matching, handlers and the image record.

Pure domain code: nothing here imports the plugin machinery.
"""

from __future__ import annotations

from hoist.images import mediatypes
from hoist.images.documents import Index, Manifest, loads_strict, parse, parse_config
from hoist.images.handlers import (
    DEFAULT_CONCURRENCY,
    MAX_CHILDREN,
    MAX_DEPTH,
    Event,
    FetchCancelled,
    children_handler,
    dispatch,
    fetch_handler,
    handlers,
    ingest_ref,
)
from hoist.images.image import CheckResult, Image, check, manifest_for, walk
from hoist.images.platforms import Matcher

__all__ = [
    "DEFAULT_CONCURRENCY",
    "MAX_CHILDREN",
    "MAX_DEPTH",
    "CheckResult",
    "Event",
    "FetchCancelled",
    "Image",
    "Index",
    "Manifest",
    "Matcher",
    "check",
    "children_handler",
    "dispatch",
    "fetch_handler",
    "handlers",
    "ingest_ref",
    "loads_strict",
    "manifest_for",
    "mediatypes",
    "parse",
    "parse_config",
    "walk",
]
