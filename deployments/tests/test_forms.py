"""The wizard's memory budget is typed as people write sizes and stored in bytes."""

import pytest
from django.core.exceptions import ValidationError

from deployments.forms import EndpointStepForm, MemorySizeField


@pytest.mark.parametrize(
    "typed,stored",
    [
        ("8 GiB", 8 * 1024**3),
        ("512mib", 512 * 1024**2),
        ("1.5 GB", 1_500_000_000),
        ("4096", 4096),
        ("", None),
    ],
)
def test_memory_size_is_read_in_binary_and_decimal_units(typed, stored):
    assert MemorySizeField(required=False).clean(typed) == stored


@pytest.mark.parametrize("typed", ["8 parsecs", "GiB", "-1 GiB", "0"])
def test_a_size_that_is_not_one_is_refused_with_an_example(typed):
    field = MemorySizeField(min_value=1, required=False)
    with pytest.raises(ValidationError) as refused:
        field.clean(typed)
    assert "8 GiB" in str(refused.value) or "greater than or equal to 1" in str(refused.value)


def test_a_stored_budget_is_shown_in_the_largest_whole_unit():
    field = MemorySizeField()
    assert field.prepare_value(8 * 1024**3) == "8 GiB"
    assert field.prepare_value(1536 * 1024**2) == "1536 MiB"
    assert field.prepare_value(1000) == 1000


def test_the_wizard_labels_the_budget_in_words():
    field = EndpointStepForm.base_fields["memory_budget_bytes"]
    assert field.label == "Memory budget" and "GiB" in field.help_text
