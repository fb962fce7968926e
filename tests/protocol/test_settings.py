import math

import pytest

from protocol.settings import ConfigError, Section, Setting, merge_sections


def test_check_converts_and_refuses_by_type():
    rate = Setting("rate", 0.5, "doc", low=0.0, high=1.0, low_open=True)
    assert rate.check(1) == 1.0 and isinstance(rate.check(1), float)
    with pytest.raises(ConfigError, match=r"rate=True must be a number"):
        rate.check(True)
    with pytest.raises(ConfigError, match=r"rate=0.0 is out of range; allowed: \(0, 1\]"):
        rate.check(0.0)
    count = Setting("count", 3, "doc", low=1)
    with pytest.raises(ConfigError, match=r"count=2.5 must be an integer"):
        count.check(2.5)
    flag = Setting("flag", False, "doc")
    with pytest.raises(ConfigError, match=r"flag='yes' must be true or false"):
        flag.check("yes")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_floats_must_be_finite_even_without_bounds(bad):
    with pytest.raises(ConfigError, match="must be a finite number"):
        Setting("w", 0.0, "doc").check(bad)


def test_choices_name_the_allowed_values():
    kind = Setting("kind", "a", "doc", choices=("a", "b"))
    with pytest.raises(ConfigError, match=r"kind='c' is not allowed; choose one of: a, b"):
        kind.check("c")


def test_section_reads_a_message_config_with_defaults():
    section = Section("s", (Setting("x", 1, "doc"), Setting("y", 0.5, "doc")))
    assert section.values({"x": 4}) == {"x": 4, "y": 0.5}
    assert section.default("y") == 0.5 and section["x"].attribute == "x"


def test_a_key_declared_twice_is_refused():
    a = Section("a", (Setting("k", 1, "doc"),))
    b = Section("b", (Setting("k", 2, "doc"),))
    with pytest.raises(ValueError, match="'k' is declared twice"):
        merge_sections([a, b])
