"""The one validation style: each check names the key, the value and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from solo_fgsynth.errors import ConfigValueError, LaunchError
from solo_fgsynth.validation import (
    check_bool,
    check_choice,
    check_int,
    check_known_keys,
    check_number,
)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("a", 1.5, 0, 1), {}, "a=1.5 is out of range: allowed is a number in [0, 1]"),
        (("a", -1, 0), {}, "a=-1 is out of range: allowed is a finite number >= 0"),
        (
            ("a", 0, 0),
            {"low_open": True, "why": "a rate"},
            "a=0 is out of range: allowed is a finite number > 0 (a rate)",
        ),
        (
            ("m", 1.0, 0, 1),
            {"high_open": True},
            "m=1.0 is out of range: allowed is a number in [0, 1)",
        ),
        (("x", True, 0, 1), {}, "x=True is out of range: allowed is a number in [0, 1]"),
        (("x", float("nan"), 0), {}, "x=nan is out of range: allowed is a finite number >= 0"),
        (("x", "2", None, 3), {}, "x='2' is out of range: allowed is a finite number <= 3"),
    ],
)
def test_check_number_names_key_value_and_range(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigValueError) as error:
        check_number(*args, **kwargs)
    assert str(error.value) == message


def test_checks_return_the_value_numpy_scalars_included() -> None:
    assert check_number("a", np.float32(0.5), 0, 1) == 0.5
    assert check_number("a", 0, 0, 1, low_open=False) == 0.0
    assert check_int("n", np.int64(3), 2, 5) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_choice("c", "b", ("a", "b")) == "b"
    assert check_bool("b", False) is False


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_int("n", 1, 2), "n=1 is out of range: allowed is an integer >= 2"),
        (lambda: check_int("n", 9, 2, 5), "n=9 is out of range: allowed is an integer in [2, 5]"),
        (lambda: check_int("n", 2.0, 2), "n=2.0 is out of range: allowed is an integer >= 2"),
        (lambda: check_int("n", True, 0), "n=True is out of range: allowed is an integer >= 0"),
        (lambda: check_choice("c", "z", ("a", "b")), "c='z' is not supported: allowed are a, b"),
        (lambda: check_bool("b", 1), "b=1 is not supported: allowed is true or false"),
        (
            lambda: check_known_keys(["num_clases"], ["num_classes", "seed"], "fgmarks", "data."),
            "data.num_clases is not a knob of fgmarks (did you mean 'num_classes'?); "
            "allowed are num_classes, seed",
        ),
    ],
)
def test_each_check_is_one_line_naming_the_value(call, message: str) -> None:
    with pytest.raises(ConfigValueError) as error:
        call()
    assert str(error.value) == message


def test_a_caller_names_its_own_error_family() -> None:
    with pytest.raises(LaunchError, match=r"^k=0 is out of range"):
        check_int("k", 0, 1, error=LaunchError)
