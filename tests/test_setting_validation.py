"""
Every setting, from every source, is checked when the server starts: a bad one is one line
naming the setting and its value, and nothing is served.

Sources: ``ProtocolConfig`` and ``KyoukaiComponent(...)`` keyword arguments (both
implementations as the backend), an Asphalt YAML config (``kyoukai-fast run``, ``asphalt run``,
gunicorn), the command line, the gunicorn worker, the ``KYOUKAI_FAST_NO_EXTENSIONS`` switch.
"""
from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import socket
import subprocess
import sys

import pytest

from kyoukai_fast import ProtocolConfig, cli
from kyoukai_fast._settings import SettingError, env_flag
from procs import VENV_BIN, env, run, source_tree_only

PY = sys.executable
RUN = [PY, "-m", "kyoukai_fast", "run"]

# (settings, the setting and value the one-line error names)
BAD = [
    ({"max_body_size": "abc"}, "max_body_size='abc'"),
    ({"max_body_size": 1.9}, "max_body_size=1.9"),
    ({"max_body_size": True}, "max_body_size=True"),
    ({"max_body_size": -1}, "max_body_size=-1"),
    ({"max_body_size": [1]}, "max_body_size=[1]"),
    ({"keepalive_timeout": -5}, "keepalive_timeout=-5"),
    ({"keepalive_timeout": "soon"}, "keepalive_timeout='soon'"),
    ({"header_timeout": float("nan")}, "header_timeout=nan"),
    ({"header_timeout": float("inf")}, "header_timeout=inf"),
    ({"header_timeout": "nan"}, "header_timeout='nan'"),
    ({"header_timeout": 0}, "header_timeout=0"),
    ({"max_pipelined_requests": 0}, "max_pipelined_requests=0"),
    ({"max_header_count": 2 ** 40}, "max_header_count=1099511627776"),
    ({"max_url_size": 2 ** 64}, "max_url_size=18446744073709551616"),
    ({"max_bodysize": 10}, "max_bodysize=10 (did you mean max_body_size?)"),
    ({"keepalive_timout": 1}, "keepalive_timout=1 (did you mean keepalive_timeout?)"),
]


@pytest.mark.parametrize("settings, named", BAD)
def test_bad_settings_are_one_line_naming_setting_and_value(settings, named):
    with pytest.raises(SettingError) as caught:
        ProtocolConfig.from_mapping(settings)
    message = str(caught.value)
    assert named in message and "\n" not in message
    if len(settings) == 1 and next(iter(settings)) in {f.name for f in
                                                      dataclasses.fields(ProtocolConfig)}:
        with pytest.raises(SettingError):
            ProtocolConfig(**settings)  # the same rules for the dataclass itself


def test_good_settings_are_read_as_their_kind():
    config = ProtocolConfig.from_mapping({
        "max_body_size": "1000", "max_url_size": 2048.0, "keepalive_timeout": "2.5",
        "header_timeout": 3, "linger_timeout": 0, "debug": True, "my_app_setting": "kept",
        "backend": "kyoukai_fast", "ip": "127.0.0.1", "port": 0})
    assert (config.max_body_size, config.max_url_size) == (1000, 2048)
    assert type(config.max_url_size) is int and type(config.header_timeout) is float
    assert (config.keepalive_timeout, config.header_timeout, config.linger_timeout) == (2.5, 3, 0)


def test_a_new_setting_is_validated_from_its_declaration_alone():
    @dataclasses.dataclass
    class Extended(ProtocolConfig):
        limit_concurrency: int | None = None
        access_log: bool = False
        root_path: str = ""

    config = Extended.from_mapping({"limit_concurrency": "8", "access_log": "yes"})
    assert (config.limit_concurrency, config.access_log, config.root_path) == (8, True, "")
    for bad, named in [({"limit_concurrency": -1}, "limit_concurrency=-1"),
                       ({"access_log": "maybe"}, "access_log='maybe'"),
                       ({"root_path": 5}, "root_path=5"),
                       ({"acess_log": True}, "did you mean access_log?")]:
        with pytest.raises(SettingError, match=named.replace("?", r"\?")):
            Extended.from_mapping(bad)


@pytest.mark.parametrize("value, expected", [
    (None, False), ("", False), ("0", False), ("false", False), ("No", False), (" off ", False),
    ("1", True), ("true", True), ("YES", True), ("on", True)])
def test_environment_switch_spellings(value, expected):
    environ = {} if value is None else {"KYOUKAI_FAST_NO_EXTENSIONS": value}
    assert env_flag("KYOUKAI_FAST_NO_EXTENSIONS", environ) is expected


@pytest.mark.parametrize("value", ["2", "maybe", "nope", "-1"])
def test_environment_switch_refuses_other_values(value):
    with pytest.raises(SettingError, match=f"KYOUKAI_FAST_NO_EXTENSIONS={value!r}"):
        env_flag("KYOUKAI_FAST_NO_EXTENSIONS", {"KYOUKAI_FAST_NO_EXTENSIONS": value})


@pytest.mark.parametrize("value, implementation", [("0", None), ("maybe", "refused")])
def test_environment_switch_selects_the_implementation(value, implementation):
    code = "import kyoukai_fast as k; print(k.IMPLEMENTATION)"
    result = subprocess.run([PY, "-c", code], env=env(KYOUKAI_FAST_NO_EXTENSIONS=value),
                            capture_output=True, text=True, timeout=60)
    if implementation == "refused":
        assert result.returncode != 0
        assert result.stderr.strip().splitlines()[-1].endswith(
            "invalid environment variable KYOUKAI_FAST_NO_EXTENSIONS='maybe': "
            "expected 1/true/yes or 0/false/no (or empty)")
        return
    assert result.returncode == 0, result.stderr
    # 0/no/empty: the same as unset (compiled when built), whichever this process selected
    built = importlib.util.find_spec("kyoukai_fast._protocol_c") is not None
    assert result.stdout.strip() == (implementation or ("cython" if built else "python"))


def _connect_refused(port) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


@pytest.mark.filterwarnings("ignore:Explicitly passing the parent context:DeprecationWarning")
@pytest.mark.parametrize("settings, named", [BAD[0], BAD[5], BAD[7], BAD[14],
                                             ({"port": 99999}, "port=99999")])
def test_component_start_refuses_bad_settings(impl, settings, named):
    from asphalt.core import Context
    from kyoukai import Kyoukai, KyoukaiComponent

    from loopback import free_port

    settings = dict(settings)

    async def main():
        app = Kyoukai("settings", loop=asyncio.get_running_loop())
        port = settings.pop("port", None) or free_port()
        component = KyoukaiComponent(app, "127.0.0.1", port,
                                     backend=impl.protocol_module.__name__, **settings)
        async with Context() as ctx:
            with pytest.raises(SettingError) as caught:
                await component.start(ctx)
        assert component.server is None
        return caught.value, port

    error, port = asyncio.run(main())
    assert named in str(error)
    if port <= 65535:
        assert _connect_refused(port)  # nothing served


@pytest.mark.parametrize("args, named", [
    (["--header-timeout", "nan"], "header_timeout=nan"),
    (["--header-timeout", "inf"], "header_timeout=inf"),
    (["--keepalive-timeout", "-5"], "keepalive_timeout=-5.0"),
    (["--max-pipelined-requests", "0"], "max_pipelined_requests=0"),
    (["--port", "99999"], "port=99999"),
    (["--port", "-1"], "port=-1"),
    (["--timeout", "nan"], "timeout=nan"),
    (["--max-body-size", "1.9"], "invalid int value: '1.9'"),
    (["--max-body-size", "abc"], "invalid int value: 'abc'"),
])
def test_command_line_refuses_bad_settings(capsys, args, named):
    with pytest.raises(SystemExit) as caught:
        cli.main(["run", "served_app:app", *args])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert named in err[-1] and "Traceback" not in "\n".join(err)


def bad_config(tmp_path, line="  keepalive_timeout: -5\n"):
    config = tmp_path / "bad.yml"
    port = "" if "port:" in line else "  port: 0\n"
    config.write_text("component:\n  type: kyoukai_fast.asphalt:KyoukaiComponent\n"
                      "  app: served_app:app\n  ip: 127.0.0.1\n" + port + line)
    return config


@pytest.mark.parametrize("line, named", [("  keepalive_timeout: -5\n", "keepalive_timeout=-5"),
                                         ("  max_body_size: abc\n", "max_body_size='abc'"),
                                         ("  max_bodysize: 10\n", "did you mean max_body_size?"),
                                         ("  port: 99999\n", "port=99999"),
                                         ("  port: http\n", "port='http'")])
def test_asphalt_config_with_a_bad_setting_is_refused_when_loaded(tmp_path, line, named):
    from kyoukai_fast import _serve

    with pytest.raises(_serve.TargetError) as caught:
        _serve.load_target(str(bad_config(tmp_path, line)))
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_asphalt_config_with_a_bad_setting_is_refused_by_the_command_line(tmp_path):
    result = run([*RUN, str(bad_config(tmp_path, "  max_bodysize: 10\n"))], env=env())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "serving" not in result.stdout
    assert result.stderr.strip().splitlines()[-1] == (
        "kyoukai-fast: error: unknown kyoukai_fast setting max_bodysize=10 (did you mean "
        "max_body_size?) (component 'kyoukai_fast.asphalt:KyoukaiComponent')")


@source_tree_only
def test_asphalt_run_with_a_bad_setting_fails_at_start(tmp_path):
    result = run([str(VENV_BIN / "asphalt"), "run", str(bad_config(tmp_path))], env=env(),
                 timeout=60)
    assert result.returncode != 0
    assert "invalid kyoukai_fast setting keepalive_timeout=-5: must not be negative" in (
        result.stderr + result.stdout)
    assert "serving on" not in result.stderr + result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="gunicorn is POSIX only")
def test_gunicorn_worker_refuses_bad_settings(tmp_path):
    # gunicorn checks its own settings; a config's kyoukai_fast settings are the worker's.
    result = run([str(VENV_BIN / "gunicorn"), "-k", "kyoukai_fast.workers.KyoukaiWorker",
                  "-b", "127.0.0.1:0", "-w", "1", str(bad_config(tmp_path))], env=env(),
                 timeout=60)
    assert result.returncode != 0
    assert "invalid kyoukai_fast setting keepalive_timeout=-5: must not be negative" in (
        result.stderr)
    assert "App failed to load" in result.stderr
