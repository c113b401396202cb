from decimal import Decimal

import pytest

from torchyard.operator.api.quantity import parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2", 2),
        (2, 2),
        ("500m", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        ("4Gi", 4 * 2**30),
        ("1k", 1000),
        ("1e3", 1000),
        (".5", Decimal("0.5")),
        ("512Mi", 512 * 2**20),
    ],
)
def test_parse(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "-1", "2GB", "1.2.3", "Gi", "1 Gi"])
def test_reject(text):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)
