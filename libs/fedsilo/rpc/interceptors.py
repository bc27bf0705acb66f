"""Server interceptor: every RPC is counted and timed by method and status code."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from fedsilo.telemetry import RPC_LATENCY, RPC_REQUESTS


def _code_of(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code() if hasattr(context, "code") else None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    return "UNKNOWN" if failed else "OK"


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, service: str) -> None:
        self._service = service

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            # Streaming handlers are timed by their servicers (bytes matter more there).
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        inner = handler.unary_unary

        def timed(request: Any, context: grpc.ServicerContext) -> Any:
            start = time.perf_counter()
            failed = False
            try:
                return inner(request, context)
            except Exception:
                failed = True
                raise
            finally:
                code = _code_of(context, failed)
                RPC_REQUESTS.labels(self._service, method, code).inc()
                RPC_LATENCY.labels(self._service, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
