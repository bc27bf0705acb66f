"""Mapping the library's errors onto gRPC status codes in one place."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, NoReturn, TypeVar

import grpc

from fedsilo.audit import AuditLog


class RpcRejection(Exception):
    """A request refused for a reason the caller must see: carries the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid_argument(message: str) -> RpcRejection:
    return RpcRejection(grpc.StatusCode.INVALID_ARGUMENT, message)


def failed_precondition(message: str) -> RpcRejection:
    return RpcRejection(grpc.StatusCode.FAILED_PRECONDITION, message)


def permission_denied(message: str) -> RpcRejection:
    return RpcRejection(grpc.StatusCode.PERMISSION_DENIED, message)


def not_found(message: str) -> RpcRejection:
    return RpcRejection(grpc.StatusCode.NOT_FOUND, message)


def abort(context: grpc.ServicerContext, rejection: RpcRejection) -> NoReturn:
    context.abort(rejection.code, rejection.message)
    raise AssertionError("unreachable: context.abort raises")


F = TypeVar("F", bound=Callable[..., Any])


def translate_errors(logger: logging.Logger) -> Callable[[F], F]:
    """Servicer-method decorator: rejections become their status, with a log line each and,
    when the servicer has an `audit` log, an audit entry: every refused request is on record."""

    def decorate(method: F) -> F:
        @wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                return method(self, request, context)
            except RpcRejection as rejection:
                logger.warning(
                    "rejected %s: %s %s", method.__name__, rejection.code.name, rejection.message
                )
                audit: AuditLog | None = getattr(self, "audit", None)
                if audit is not None:
                    audit.append(
                        "request_rejected",
                        actor=str(getattr(request, "client_id", "")),
                        method=method.__name__,
                        code=rejection.code.name,
                        reason=rejection.message,
                        peer=context.peer(),
                    )
                abort(context, rejection)

        return wrapper  # type: ignore[return-value]

    return decorate
