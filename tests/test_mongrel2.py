"""Unit tests for brubeck.mongrel2 that need no Mongrel2 binary."""

import re
import socket
from pathlib import Path

import pytest

from brubeck.mongrel2 import (
    DEFAULT_SETTINGS,
    Mongrel2Config,
    Mongrel2Process,
    StaticDir,
    free_port,
)

SEND = "tcp://127.0.0.1:9997"
RECV = "tcp://127.0.0.1:9996"


def make(**kw):
    return Mongrel2Config(
        send_spec=kw.pop("send_spec", SEND), recv_spec=kw.pop("recv_spec", RECV), **kw
    )


def test_free_port_is_bindable():
    port = free_port()
    assert 1 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_render_defaults():
    cfg = make(send_ident="ident-1", server_uuid="srv-1")
    text = cfg.render()
    assert 'send_spec="tcp://127.0.0.1:9997"' in text
    assert 'recv_spec="tcp://127.0.0.1:9996"' in text
    assert 'send_ident="ident-1"' in text
    assert 'recv_ident="", protocol="tnetstring"' in text
    assert 'uuid="srv-1"' in text
    assert 'chroot="./"' in text
    assert 'pid_file="/run/mongrel2.pid"' in text
    assert 'access_log="/logs/access.log"' in text
    assert 'error_log="/logs/error.log"' in text
    assert 'bind_addr="127.0.0.1"' in text
    assert "port=6767," in text
    assert 'default_host="localhost"' in text
    assert 'hosts=[Host(name="localhost", routes={"/": handler})]' in text
    assert '"server.daemonize": 0' in text
    assert '"limits.content_length": 20480' in text
    assert '"upload.temp_store": "tmp/upload.XXXXXX"' in text
    assert '"upload.temp_store_mode": "0600"' in text
    assert "disable.access_logging" not in text
    assert text.rstrip().endswith("servers = [main]")


def test_idents_default_to_distinct_uuids():
    a, b = make(), make()
    uuid_re = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")
    for value in (a.send_ident, a.server_uuid):
        assert uuid_re.fullmatch(value)
    assert a.send_ident != b.send_ident
    assert a.server_uuid != b.server_uuid
    assert a.render().count(a.send_ident) == 1


def test_settings_merge_and_access_log():
    cfg = make(access_log=False, settings={"limits.content_length": 5000, "upload.stream": 1})
    eff = cfg.effective_settings
    assert eff["limits.content_length"] == 5000
    assert eff["disable.access_logging"] == 1
    assert eff["upload.stream"] == 1
    assert eff["upload.temp_store"] == DEFAULT_SETTINGS["upload.temp_store"]
    assert '"disable.access_logging": 1' in cfg.render()
    # explicit settings win over the access_log shortcut
    assert (
        make(access_log=False, settings={"disable.access_logging": 0}).effective_settings[
            "disable.access_logging"
        ]
        == 0
    )
    # bools are rendered as ints, which is what Mongrel2 reads
    assert '"download.flow_control": 1' in make(settings={"download.flow_control": True}).render()


def test_static_dir_routes():
    static = StaticDir("static/", index_file="home.html", default_ctype="application/octet-stream")
    cfg = make(
        routes={"/": "handler", "/static/": static, "/files/": static, "/b/": StaticDir("b/")}
    )
    text = cfg.render()
    assert (
        'dir_0 = Dir(base="static/", index_file="home.html", '
        'default_ctype="application/octet-stream")' in text
    )
    assert 'dir_1 = Dir(base="b/", index_file="index.html", default_ctype="text/plain")' in text
    assert 'routes={"/": handler, "/static/": dir_0, "/files/": dir_0, "/b/": dir_1}' in text


def test_on_free_ports():
    cfg = Mongrel2Config.on_free_ports(host="example")
    assert cfg.send_spec.startswith("tcp://127.0.0.1:")
    assert cfg.recv_spec.startswith("tcp://127.0.0.1:")
    assert cfg.send_spec != cfg.recv_spec
    assert cfg.host == "example"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"port": 0}, "port must be an int in 1..65535"),
        ({"port": 70000}, "port must be an int in 1..65535"),
        ({"port": "80"}, "port must be an int in 1..65535"),
        ({"port": True}, "port must be an int in 1..65535"),
        ({"send_ident": "has space"}, r"send_ident may only contain \[A-Za-z0-9-\]"),
        ({"send_ident": "a_b"}, r"send_ident may only contain"),
        ({"send_ident": ""}, r"send_ident may only contain"),
        ({"server_uuid": "x/y"}, r"server_uuid may only contain"),
        ({"send_spec": "127.0.0.1:9997"}, "send_spec must be a ZeroMQ endpoint"),
        ({"recv_spec": 'tcp://a"b'}, "recv_spec must be a ZeroMQ endpoint"),
        ({"recv_spec": SEND}, "send_spec and recv_spec must differ"),
        ({"bind_addr": "localhost"}, "bind_addr must be an IP address"),
        ({"host": 'evil"host'}, "host must not contain quotes"),
        ({"host": ""}, "host must be a non-empty name"),
        ({"routes": {}}, "routes must be a non-empty dict"),
        ({"routes": {"/": "app"}}, "must map to 'handler' or a StaticDir"),
        ({"routes": {"/": StaticDir("static")}}, "StaticDir.base must end with '/'"),
        ({"routes": {"/": StaticDir("/srv/")}}, "StaticDir.base must be relative"),
        ({"routes": {"/": StaticDir("../up/")}}, "must not contain '..'"),
        ({"settings": {"bad key": 1}}, "setting names may only contain"),
        ({"settings": {"a.b": 1.5}}, "must be a str or an int"),
        ({"settings": {"a.b": 'x"y'}}, "must not contain quotes"),
        ({"settings": {"server.daemonize": 1}}, "server.daemonize must be 0"),
        ({"settings": {"limits.content_length": 1024}}, r"must be >= limits.buffer_size \(4096\)"),
        (
            {"settings": {"limits.content_length": 8000, "limits.buffer_size": 8192}},
            "stalls or corrupts uploads",
        ),
        ({"settings": {"limits.content_length": "big"}}, "must be an integer"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_render_revalidates_after_mutation():
    cfg = make()
    cfg.port = -1
    with pytest.raises(ValueError, match="port"):
        cfg.render()


def test_process_paths(tmp_path):
    cfg = make(port=8123, bind_addr="0.0.0.0")
    proc = Mongrel2Process(cfg, tmp_path)
    assert proc.url == "http://127.0.0.1:8123"
    assert proc.run_dir == tmp_path
    assert proc.pid is None
    assert proc.upload_dir == tmp_path / "tmp"
    assert proc.resolve_path("tmp/upload.abc") == tmp_path / "tmp/upload.abc"
    with pytest.raises(ValueError, match=r"outside Mongrel2.s run directory"):
        proc.resolve_path("tmp/../../etc/passwd")
    proc._chrooted = True
    assert proc.resolve_path("/tmp/upload.abc") == tmp_path / "tmp/upload.abc"
    with pytest.raises(ValueError, match=r"outside Mongrel2.s run directory"):
        proc.resolve_path("/../etc/passwd")
    proc._chrooted = False  # test mode: absolute paths are literal, but only in the store dir
    with pytest.raises(ValueError, match="not in Mongrel2's upload directory"):
        proc.resolve_path("/tmp/upload.abc")
    literal = Mongrel2Process(
        make(settings={"upload.temp_store": "/var/up/upload.XXXXXX"}), tmp_path
    )
    literal._chrooted = False
    assert literal.resolve_path("/var/up/upload.abc") == Path("/var/up/upload.abc")
    with pytest.raises(ValueError, match="not in Mongrel2's upload directory"):
        literal.resolve_path("/etc/passwd")
    assert "stopped" in repr(proc) and "8123" in repr(proc)
    proc.stop()  # idempotent, also before start


def test_ipv6_url(tmp_path):
    proc = Mongrel2Process(make(bind_addr="::1", port=8124), tmp_path)
    assert proc.url == "http://[::1]:8124"


def test_start_without_binaries(tmp_path):
    proc = Mongrel2Process(make(), tmp_path, mongrel2_bin="no-such-mongrel2-binary")
    with pytest.raises(FileNotFoundError, match="apt-get install -y mongrel2-core"):
        proc.start()
    assert proc.pid is None
