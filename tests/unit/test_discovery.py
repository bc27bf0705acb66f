from __future__ import annotations

import pytest

from fedsilo.discovery import (
    DiscoveryError,
    advertised_to,
    resolve_endpoints,
    validate_endpoints,
)

ADVERTISED = {
    "registry": "registry.fl.example:50051",
    "scheduler": "scheduler.fl.example:50051",
    "modelstore": "10.0.0.7:50051",
    "keymanager": "[fd00::7]:50051",
}


def test_a_site_without_a_certificate_learns_only_the_registrys_own_address() -> None:
    assert advertised_to(ADVERTISED, enrolled=False) == {"registry": "registry.fl.example:50051"}
    assert advertised_to(ADVERTISED, enrolled=True) == ADVERTISED
    assert advertised_to({}, enrolled=False) == {}


@pytest.mark.parametrize(
    ("endpoints", "complaint"),
    [
        ({"registry": "no-port"}, "'registry': 'no-port' is not host:port"),
        ({"registry": "r:50051", "scheduler": "s:70000"}, "'scheduler'"),
        ({"scheduler": "s:1"}, "must name the registry's own mutual-TLS address"),
        ({"registry": "r:1", "Bad Name": "x:1"}, "endpoint name 'Bad Name'"),
    ],
)
def test_bad_advertised_endpoints_are_refused_by_name(
    endpoints: dict[str, str], complaint: str
) -> None:
    with pytest.raises(DiscoveryError, match=complaint):
        validate_endpoints(endpoints)


def test_the_sites_own_settings_override_what_the_registry_says() -> None:
    resolved = resolve_endpoints(ADVERTISED, {"scheduler": "127.0.0.1:7000", "modelstore": None})
    assert resolved == {**ADVERTISED, "scheduler": "127.0.0.1:7000"}


def test_a_service_nobody_names_is_an_error_that_says_where_to_set_it() -> None:
    with pytest.raises(DiscoveryError) as caught:
        resolve_endpoints({"registry": "r:1", "scheduler": "s:1"}, {})
    message = str(caught.value)
    assert "does not advertise modelstore, keymanager" in message
    assert "FEDSILO_SITE_ENDPOINTS" in message and "FEDSILO_KEYMANAGER_ADDRESS" in message
