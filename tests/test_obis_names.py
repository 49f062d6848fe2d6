"""Readable OBIS names (``protocols.obis_names``) for the codes a bench meets."""

from __future__ import annotations

import pytest

from protocols.cosem import Obis
from protocols.obis_names import obis_name


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("0.0.1.0.0.255", "clock"),
        ("1.0.99.1.0.255", "load profile 1"),
        ("1.0.1.8.0.255", "active energy import (+A)"),
        ("1.0.2.8.2.255", "active energy export (-A) tariff 2"),
        ("1.0.1.8.0.3", "active energy import (+A), billing period 3"),
        ("1.0.32.7.0.255", "voltage L1"),
        ("1.0.71.7.0.255", "current L3"),
        ("1.0.41.7.0.255", "active power import (+P) L2"),
        ("1.0.1.6.0.255", "active power import (+P) maximum demand"),
        ("1.0.14.7.0.255", "frequency"),
        ("1.0.32.8.0.255", None),  # no voltage energy
        ("1.0.1.99.0.255", None),
        ("7.0.3.0.0.255", None),
    ],
)
def test_names(code: str, name: str | None) -> None:
    assert obis_name(Obis.parse(code)) == name
