"""Client channels with the same options everywhere."""

from __future__ import annotations

import json

import grpc

from fedsilo.rpc.tls import TlsConfig

# Large tensors go through chunked streams, so messages stay small; 64 MiB is a safety limit.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024

# Transient UNAVAILABLE (a service restarting) is retried by gRPC itself, with backoff.
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "3s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", _SERVICE_CONFIG),
]


def connect(address: str, tls: TlsConfig | None) -> grpc.Channel:
    """A channel to host:port: mutual TLS with this party's certificate, or plaintext when
    TLS was explicitly switched off."""
    if not address or ":" not in address:
        raise ValueError(f"expected a host:port address, got {address!r}")
    if tls is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, tls.channel_credentials(), options=CHANNEL_OPTIONS)


def wait_ready(channel: grpc.Channel, timeout_s: float, what: str) -> None:
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        raise TimeoutError(f"{what} did not become reachable within {timeout_s:.0f}s") from None
