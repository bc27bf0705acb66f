"""Service discovery for sites: a site is given the registry's address, the platform CA and a
one-time token; it learns every other address from the registry, at enrollment and at every
start, so that an institution's operator never copies control-plane addresses by hand.

The registry advertises what its `FEDSILO_SITE_ENDPOINTS` says (the addresses *sites* dial,
which in Kubernetes are often external names, not the in-cluster ones). Before a client holds
a certificate, it learns only the registry's mutual-TLS address; the rest is told to enrolled
clients over mutual TLS. A site's own settings (`FEDSILO_SCHEDULER_ADDRESS`, ...) override
what the registry says, service by service.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# The services a client agent dials; later services are advertised under their own names.
REGISTRY = "registry"
SITE_SERVICES = ("registry", "scheduler", "modelstore", "keymanager")

_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})$")
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class DiscoveryError(ValueError):
    """The endpoints are malformed, or a service a site needs is not advertised."""


def check_address(name: str, address: str) -> str:
    """host:port with a port in 1..65535; the error names the service and the value."""
    match = _ADDRESS.match(address)
    if match is None or not 0 < int(match.group(2)) < 65536:
        raise DiscoveryError(f"endpoint {name!r}: {address!r} is not host:port")
    return address


def validate_endpoints(endpoints: Mapping[str, str]) -> dict[str, str]:
    """Service name -> host:port, each checked; what the registry advertises."""
    checked = {}
    for name, address in endpoints.items():
        if not _NAME.match(name):
            raise DiscoveryError(f"endpoint name {name!r} must be a lowercase service name")
        checked[name] = check_address(name, address)
    if checked and REGISTRY not in checked:
        raise DiscoveryError(
            "the advertised endpoints must name the registry's own mutual-TLS address "
            "(key 'registry'), where enrolled clients send heartbeats"
        )
    return checked


def advertised_to(endpoints: Mapping[str, str], *, enrolled: bool) -> dict[str, str]:
    """What the registry tells a caller: everything to an enrolled (authenticated) client,
    only the registry's own mutual-TLS address to one that has no certificate yet."""
    if enrolled:
        return dict(endpoints)
    return {REGISTRY: endpoints[REGISTRY]} if REGISTRY in endpoints else {}


def resolve_endpoints(
    discovered: Mapping[str, str],
    overrides: Mapping[str, str | None],
    required: tuple[str, ...] = SITE_SERVICES,
) -> dict[str, str]:
    """The registry's answer with the site's own overrides on top; every required service
    must end up with an address, or the error says which one and how to give it."""
    resolved = dict(discovered)
    resolved.update({name: value for name, value in overrides.items() if value})
    missing = [name for name in required if not resolved.get(name)]
    if missing:
        names = ", ".join(missing)
        settings = ", ".join(f"FEDSILO_{name.upper()}_ADDRESS" for name in missing)
        raise DiscoveryError(
            f"the registry does not advertise {names}: the control plane's operator sets "
            f"them in the registry's FEDSILO_SITE_ENDPOINTS (the chart's siteEndpoints); "
            f"meanwhile this site can set {settings}"
        )
    return {name: check_address(name, address) for name, address in resolved.items()}
