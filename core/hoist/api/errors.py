"""Hoist errors to gRPC status codes and back, as containerd's errdefs does.

Server side, :class:`ErrorInterceptor` (or :func:`translate_errors` on a servicer) turns a
:class:`~hoist.errors.HoistError` raised by a servicer method into its status code with the error's
message. Client side, :func:`from_rpc_error` turns a :class:`grpc.RpcError` back into the Hoist error
class of its code, message unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from hoist.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    HoistError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    UnavailableError,
    UnsupportedError,
)

log = logging.getLogger("hoist.api")

_TO_CODE: tuple[tuple[type[HoistError], grpc.StatusCode], ...] = (
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (InvalidArgumentError, grpc.StatusCode.INVALID_ARGUMENT),
    (FailedPreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (OutOfRangeError, grpc.StatusCode.OUT_OF_RANGE),
    (UnsupportedError, grpc.StatusCode.UNIMPLEMENTED),
)

_FROM_CODE: dict[grpc.StatusCode, type[HoistError]] = {code: cls for cls, code in _TO_CODE}


def code_of(err: BaseException) -> grpc.StatusCode:
    """The status code that stands for ``err``: its Hoist class's code, ``UNKNOWN`` for anything else."""
    for cls, code in _TO_CODE:
        if isinstance(err, cls):
            return code
    return grpc.StatusCode.UNKNOWN


def error_class(code: grpc.StatusCode) -> type[HoistError]:
    """The Hoist error class of a status code; :class:`HoistError` itself for codes without one."""
    return _FROM_CODE.get(code, HoistError)


def to_status(err: BaseException) -> tuple[grpc.StatusCode, str]:
    """``(code, message)`` to send for ``err``; the message is ``str(err)``."""
    return code_of(err), str(err)


def from_status(code: grpc.StatusCode, message: str) -> HoistError:
    """The Hoist error for a status ``code`` with ``message`` (unchanged)."""
    return error_class(code)(message)


def from_rpc_error(err: grpc.RpcError) -> HoistError:
    """The Hoist error a failed call stands for, with the server's message.

    A connection that could not be made is :class:`~hoist.errors.UnavailableError` like any other
    ``UNAVAILABLE``; the message then is gRPC's own description.
    """
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    details = err.details() if callable(getattr(err, "details", None)) else None
    return from_status(code, details or (code.name.lower().replace("_", " ") if code else str(err)))


T = TypeVar("T")


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with a :class:`grpc.RpcError` re-raised as its Hoist error."""
    try:
        return fn(*args, **kwargs)
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


def iterate(stream: Iterator[T]) -> Iterator[T]:
    """Iterate a response stream, re-raising a :class:`grpc.RpcError` as its Hoist error."""
    try:
        yield from stream
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


def _abort(context: grpc.ServicerContext, err: HoistError, method: str) -> None:
    code, message = to_status(err)
    if code == grpc.StatusCode.UNKNOWN:
        log.warning("%s: %s", method, message)
    else:
        log.debug("%s: %s: %s", method, code.name, message)
    context.abort(code, message)


def _wrap_unary(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def handler(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(request, context)
        except HoistError as err:
            _abort(context, err, method)

    return handler


def _wrap_stream(fn: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def handler(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(request, context)
        except HoistError as err:
            _abort(context, err, method)

    return handler


_MAX_WRAPPED = 1024
"""Wrapped handlers an :class:`ErrorInterceptor` keeps (servers register a fixed set of methods)."""


class ErrorInterceptor(grpc.ServerInterceptor):
    """Maps a :class:`~hoist.errors.HoistError` escaping any handler to its status code and message.

    Each method's handler is wrapped once and reused on every call (clients such as ``ctr`` make
    thousands of small calls); a handler whose servicer already maps errors (:func:`translate_errors`)
    is served as it is.
    """

    def __init__(self) -> None:
        self._wrapped: dict[tuple[str, Any], Any] = {}

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        key = (method, handler)
        try:
            return self._wrapped[key]
        except KeyError:
            pass
        except TypeError:  # a handler with unhashable parts: wrap it for this call only
            return _wrap_handler(handler, method)
        wrapped = _wrap_handler(handler, method)
        if len(self._wrapped) < _MAX_WRAPPED:
            self._wrapped[key] = wrapped
        return wrapped


def _wrap_handler(handler: Any, method: str) -> Any:
    for kind, wrap in (("unary_unary", _wrap_unary), ("stream_unary", _wrap_unary),
                       ("unary_stream", _wrap_stream), ("stream_stream", _wrap_stream)):
        fn = getattr(handler, kind)
        if fn is not None:
            if _maps_errors(fn):
                return handler
            return handler._replace(**{kind: wrap(fn, method)})
    return handler


C = TypeVar("C")


def translate_errors(cls: C) -> C:
    """Class decorator for a servicer: every public method maps Hoist errors to status codes.

    Generator methods (server-streaming) are wrapped so errors raised mid-stream are mapped too. Use
    it on servicers that may be registered on a server without :class:`ErrorInterceptor`.
    """
    for name, fn in list(vars(cls).items()):
        if name.startswith("_") or not inspect.isfunction(fn):
            continue
        if name == "register":
            continue
        method = f"{cls.__name__}.{name}"
        if inspect.isgeneratorfunction(fn):
            wrapped = _wrap_stream_method(fn, method)
        else:
            wrapped = _wrap_unary_method(fn, method)
        setattr(cls, name, wrapped)
    return cls


_MAPPING: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()
"""The servicer methods :func:`translate_errors` made, which map errors themselves."""


def _maps_errors(fn: Callable[..., Any]) -> bool:
    try:
        return getattr(fn, "__func__", fn) in _MAPPING
    except TypeError:  # an unhashable callable
        return False


def _wrap_unary_method(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except HoistError as err:
            _abort(context, err, method)

    _MAPPING.add(handler)
    return handler


def _wrap_stream_method(fn: Callable[..., Iterator[Any]], method: str) -> Callable[..., Iterator[Any]]:
    @functools.wraps(fn)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except HoistError as err:
            _abort(context, err, method)

    _MAPPING.add(handler)
    return handler


__all__ = [
    "ErrorInterceptor",
    "call",
    "code_of",
    "error_class",
    "from_rpc_error",
    "from_status",
    "iterate",
    "to_status",
    "translate_errors",
]
