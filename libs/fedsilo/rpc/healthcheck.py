"""Ask services' plaintext health ports whether they serve: the charts' `helm test` hook.

    python -m fedsilo.rpc.healthcheck host:8086 host:8086/fedsilo.v1.Registry --wait 60

Each target is host:port, optionally /<gRPC service name> (default: the whole server). Exits 0
when every target answers SERVING within --wait seconds, 1 otherwise, naming those that did not.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def check(target: str, timeout_s: float) -> str:
    """SERVING, NOT_SERVING, ... or the gRPC error that prevented an answer."""
    address, _, service = target.partition("/")
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fedsilo.rpc.healthcheck", description=__doc__)
    parser.add_argument("targets", nargs="+", help="host:port[/service]")
    parser.add_argument("--wait", type=float, default=0.0, help="retry this long (seconds)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per check (seconds)")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.wait
    pending = list(args.targets)
    while True:
        answers = {target: check(target, args.timeout) for target in pending}
        pending = [target for target, answer in answers.items() if answer != "SERVING"]
        for target, answer in answers.items():
            if answer == "SERVING" or time.monotonic() >= deadline:
                print(f"{target}: {answer}")
        if not pending or time.monotonic() >= deadline:
            return 1 if pending else 0
        time.sleep(1.0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
