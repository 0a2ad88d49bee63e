"""Edge cases of brubeck.mongrel2 found by an adversarial pass (each one was a bug)."""

from __future__ import annotations

import re
import shutil
import socket
import warnings
from pathlib import Path

import pytest

from brubeck.mongrel2 import Mongrel2Config, Mongrel2Process

needs_mongrel2 = pytest.mark.skipif(
    shutil.which("mongrel2") is None or shutil.which("m2sh") is None,
    reason="needs mongrel2-core",
)


def make(**kw: object) -> Mongrel2Config:
    return Mongrel2Config(
        send_spec="tcp://127.0.0.1:9997",
        recv_spec="tcp://127.0.0.1:9996",
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("value", [2**31, -(2**31) - 1, 2**70])
def test_setting_ints_outside_c_int_range_are_refused(value: int) -> None:
    """Was a bug. Mongrel2 reads settings with atoi(), so 2**70 silently became garbage;
    expected: a ValueError naming the setting."""
    with pytest.raises(ValueError, match=r"limits\.min_ping"):
        make(settings={"limits.min_ping": value})


def test_unknown_setting_names_warn() -> None:
    """Was a bug. m2sh stores any key and Mongrel2 ignores unknown ones, so a typo such as
    ``limits.content_lenght`` was silently without effect; expected: a UserWarning."""
    with pytest.warns(UserWarning, match=r"limits\.content_lenght"):
        make(settings={"limits.content_lenght": 50000})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make(settings={"limits.min_ping": 1, "download.flow_control": 1})


@needs_mongrel2
@pytest.mark.parametrize("which", ["send_spec", "recv_spec"])
def test_a_busy_zeromq_port_is_a_clear_error(tmp_path: Path, which: str) -> None:
    """Was a bug. With the handler port taken, Mongrel2 only logs "Failed to bind … trying
    again" and start() returned as if all was well: requests then hang forever. Expected:
    start() raises naming the endpoint, and no Mongrel2 is left running."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        spec = f"tcp://127.0.0.1:{busy.getsockname()[1]}"
        m2 = Mongrel2Process(Mongrel2Config.on_free_ports(**{which: spec}), tmp_path)
        try:
            with pytest.raises(RuntimeError, match=re.escape(spec)):
                m2.start()
            assert not m2.running
        finally:
            m2.stop()
