import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brubeck.security import check_password, hash_password, sign_value, verify_value

KEY = "k" * 32
OLD = "o" * 32


def test_round_trip_any_json_value():
    value = {"id": 7, "roles": ["admin"], "name": "Zoë"}
    assert verify_value(KEY, "user", sign_value(KEY, "user", value)) == value


def test_signed_value_is_cookie_safe():
    signed = sign_value(KEY, "user", 'a b;c,"d"')
    assert all(c.isalnum() or c in "-_." for c in signed)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),  # signature flipped
        lambda s: s.replace(s.split(".")[1], s.split(".")[1][::-1]),  # payload changed
        lambda s: "2" + s[1:],  # unknown version
        lambda s: s.rsplit(".", 1)[0],  # no signature
        lambda s: "",
    ],
)
def test_tampered_values_are_refused(mutate):
    assert verify_value(KEY, "user", mutate(sign_value(KEY, "user", 1))) is None


def test_value_is_bound_to_its_name():
    assert verify_value(KEY, "admin", sign_value(KEY, "user", 1)) is None


def test_expiry_and_future_timestamps():
    now = time.time()
    signed = sign_value(KEY, "n", 1, now=now - 100)
    assert verify_value(KEY, "n", signed, max_age=200, now=now) == 1
    assert verify_value(KEY, "n", signed, max_age=50, now=now) is None
    assert verify_value(KEY, "n", signed, max_age=None, now=now) == 1
    assert verify_value(KEY, "n", sign_value(KEY, "n", 1, now=now + 3600), now=now) is None


def test_key_rotation_accepts_old_keys_and_signs_with_newest():
    old = sign_value(OLD, "n", "v")
    assert verify_value([KEY, OLD], "n", old) == "v"
    assert verify_value(KEY, "n", old) is None
    new = sign_value([KEY, OLD], "n", "v")
    assert verify_value(KEY, "n", new) == "v"


def test_short_secret_is_an_error():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        sign_value("short", "n", 1)


@given(st.text(max_size=200))
def test_arbitrary_text_never_verifies_nor_raises(text):
    assert verify_value(KEY, "n", text) is None


def test_password_hash():
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$")
    assert check_password("correct horse", stored)
    assert not check_password("wrong horse", stored)
    assert not check_password("x", "garbage")
    assert hash_password("same") != hash_password("same")  # salted
