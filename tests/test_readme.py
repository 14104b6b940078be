"""
Every example in README.md runs: each shell command, the Python snippet and the Asphalt config.

Commands run as written, from the directory they ``cd`` into, with this venv's ``python`` and its
installed ``kyoukai-fast`` console script on PATH. The only
change: a server's fixed port 4444 becomes 0 (a free port, printed or logged by the server), and
gunicorn runs 2 workers instead of 4 on this small machine. The ``pip install`` lines run in
tests/test_install.py; ``make test`` is what runs this file.
"""
from __future__ import annotations

import re
import shlex
import sys

import pytest

from procs import (
    ROOT,
    TIMEOUT,
    VENV_BIN,
    Server,
    env,
    free_port_server,
    get_json,
    posix_only,
    request,
    run,
    source_tree_only,
)

pytestmark = [source_tree_only, posix_only]

README = (ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else ""


#: The README sections whose examples this file runs (other sections have tests of their own).
SECTIONS = ("", "Install", "Switch your app", "Run with the CLI", "Run under gunicorn",
            "Asphalt config", "Which implementation is live")


def sections() -> dict:
    """README text by ``## `` heading ("" for what comes before the first one)."""
    parts = re.split(r"^## (.+)$", README, flags=re.M)
    found = {"": parts[0]}
    found.update(zip(parts[1::2], parts[2::2]))
    return found


def code_blocks(language: str) -> list[str]:
    text = sections()
    assert set(SECTIONS) <= set(text), set(SECTIONS) - set(text)
    return [block for name in SECTIONS
            for block in re.findall(rf"```{language}\n(.*?)```", text[name], flags=re.S)]


def readme_commands() -> list[str]:
    commands = []
    for block in code_blocks("sh"):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


# README command -> how the test runs it.
HELLO = r"serving hello_app:app on http://127\.0\.0\.1:(\d+)"
SERVERS = {
    # serve.sh bootstraps first (the venv, its packages, the build), then serves
    "bash scripts/serve.sh --port 4444": dict(port=HELLO, timeout=60),
    "cd examples && kyoukai-fast run hello_app:app --port 4444": dict(port=HELLO),
    "cd examples && python -m kyoukai_fast run hello_app:app --port 4444 --loop asyncio "
    "--log-level warning": dict(port=HELLO),
    "cd examples && kyoukai-fast run hello_app:app --port 4444 --workers 4":
        dict(port=HELLO, workers=True),
    "cd examples && kyoukai-fast run asphalt.yml": dict(port=r"on http://127\.0\.0\.1:(\d+)",
                                                       extra=["--port", "0"]),
    "cd examples && gunicorn -k kyoukai_fast.workers.KyoukaiWorker hello_app:app -w 4 "
    "-b 127.0.0.1:4444": dict(port=r"Listening at: http://127\.0\.0\.1:(\d+)", workers=True),
    "cd examples && PYTHONPATH=. asphalt run asphalt.yml":
        dict(port=r"kyoukai_fast serving on 127\.0\.0\.1:(\d+)",
             extra=["--set", "component.port=0"]),
}
IMPLEMENTATION = 'python -c "import kyoukai_fast; print(kyoukai_fast.IMPLEMENTATION)"'
ELSEWHERE = {
    "make test": "runs this test suite (.ci/run)",
    'pip install ".[kyoukai]"': "tests/test_install.py",
    "pip install --no-deps kyoukai==2.2.1.post1": "tests/test_install.py",
}
ONE_SHOT = {IMPLEMENTATION: "cython", f"KYOUKAI_FAST_NO_EXTENSIONS=1 {IMPLEMENTATION}": "python"}


def test_every_readme_command_is_tested():
    known = set(SERVERS) | set(ELSEWHERE) | set(ONE_SHOT)
    commands = readme_commands()
    assert set(commands) == known, set(commands) ^ known
    install = (ROOT / "tests" / "test_install.py").read_text()
    for command, where in ELSEWHERE.items():
        if where.endswith(".py"):
            assert command.split()[-1].strip('"') in install, command


@pytest.fixture(scope="module")
def shims(tmp_path_factory):
    """``python`` on PATH as this venv's; ``kyoukai-fast`` is the console script installed in
    it (scripts/bootstrap.sh installs the checkout), found on PATH beside it."""
    assert (VENV_BIN / "kyoukai-fast").exists(), "scripts/bootstrap.sh installs kyoukai-fast"
    folder = tmp_path_factory.mktemp("bin")
    for name, body in (("python", f'exec "{sys.executable}" "$@"'),):
        script = folder / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return folder


def split(command: str, environment: dict):
    """``cd DIR && VAR=value program args`` -> (argv, cwd), without a shell in between (so that
    signals reach the server itself)."""
    cwd = ROOT
    match = re.match(r"cd (\S+) && (.*)", command)
    if match:
        cwd, command = ROOT / match.group(1), match.group(2)
    argv = shlex.split(command)
    while argv and re.match(r"^[A-Z_]+=", argv[0]):
        name, value = argv.pop(0).split("=", 1)
        if name == "PYTHONPATH":
            value = f"{(cwd / value).resolve()}:{environment['PYTHONPATH']}"
        environment[name] = value
    return argv, cwd


def for_test(command: str) -> str:
    command = command.replace("--port 4444", "--port 0").replace("127.0.0.1:4444", "127.0.0.1:0")
    return command.replace("--workers 4", "--workers 2").replace("-w 4", "-w 2")


@pytest.mark.parametrize("command", list(SERVERS))
def test_server_command(command, shims):
    assert command in README
    how = SERVERS[command]
    environment = env(PATH=f"{shims}:{VENV_BIN}:{env()['PATH']}")
    argv, cwd = split(for_test(command), environment)
    assert "4444" not in " ".join(argv)
    with Server([*argv, *how.get("extra", [])], env=environment, cwd=cwd) as server:
        port = server.port(how["port"], how.get("timeout", TIMEOUT))
        assert request(port, "GET", "/")[::2] == (200, b"Hello, world!")
        status = get_json(port, "/api/status")
        assert status["backend"].startswith("kyoukai_fast._protocol_")
        assert request(port, "GET", "/missing")[0] == 404
        if how.get("workers"):
            server.wait_workers(2)
    assert server.proc.returncode in (0, -15)  # stopped by the test's SIGTERM


@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_implementation_command(command, shims):
    assert command in README
    environment = env(PATH=f"{shims}:{env()['PATH']}")
    argv, cwd = split(command, environment)
    result = run(argv, env=environment, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ONE_SHOT[command]


def test_switch_your_app_snippet():
    [snippet] = code_blocks("python")
    assert 'backend="kyoukai_fast"' in snippet and "4444" in snippet
    runner = ("import sys; source = sys.argv[1].replace('4444', sys.argv[2]); "
              "exec(compile(source, 'README.md', 'exec'))")
    # free_port_server appends the port it picked: sys.argv[2].
    with free_port_server([sys.executable, "-c", runner, snippet], [],
                          ready=r"Application started") as (server, port):
        assert request(port, "GET", "/")[::2] == (200, b"Hello from kyoukai_fast")
        assert request(port, "GET", "/missing")[0] == 404


def test_asphalt_config_block_is_the_example_file():
    from ruamel.yaml import YAML

    [block] = code_blocks("yaml")
    yaml = YAML(typ="safe")
    assert yaml.load(block) == yaml.load((ROOT / "examples" / "asphalt.yml").read_text())


def test_streaming_responses_snippet():
    [snippet] = re.findall(r"```python\n(.*?)```", sections()["Streaming responses"], flags=re.S)
    assert "StreamingBody(" in snippet
    # The snippet adds a route to the app of "Switch your app": the same app, served the same way.
    runner = "\n".join([
        "import sys",
        "import kyoukai_fast.compat",
        "kyoukai_fast.compat.apply()",
        "from kyoukai import Kyoukai, KyoukaiComponent",
        "app = Kyoukai('my_app')",
        "exec(compile(sys.argv[1], 'README.md', 'exec'))",
        "app.run(component=KyoukaiComponent(app, '127.0.0.1', int(sys.argv[2]),"
        " backend='kyoukai_fast'))",
    ])
    with free_port_server([sys.executable, "-c", runner, snippet], [],
                          ready=r"Application started") as (server, port):
        status, headers, body = request(port, "GET", "/export.csv")
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked" and "Content-Length" not in headers
    assert headers["Content-Type"].startswith("text/csv")
    assert body == b"id,name\n1,item 1\n2,item 2\n3,item 3\n"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_command():
    # The README opens with "serve the example app" and "run all tests", and .ci/run calls that
    # test command, which lints, then runs the whole suite with the compiled module required,
    # once with it selected and once with the pure-Python twin selected.
    first = re.findall(r"```sh\n(.*?)```", sections()[""], flags=re.S)[0]
    commands = [re.sub(r"\s+#.*$", "", line).strip() for line in first.splitlines()]
    assert commands[0].startswith("bash scripts/serve.sh") and commands[1:] == ["make test"]
    ci = ROOT / ".ci" / "run"
    assert ci.stat().st_mode & 0o111, "not executable"
    ci_lines = [line.strip() for line in ci.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert ci_lines[-1] == "make test"
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^test:\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert target and target.group(1).strip() == "bash scripts/test.sh"
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert "export KYOUKAI_FAST_EXPECT_COMPILED=1" in script
    assert re.search(r'^\.venv/bin/python -m pytest "\$\{workers\[@\]\}" tests\b', script,
                     flags=re.M)
    assert re.search(r'^KYOUKAI_FAST_NO_EXTENSIONS=1 \.venv/bin/python -m pytest -q '
                     r'"\$\{workers\[@\]\}" tests\b', script, flags=re.M)
    assert re.search(r'^workers=\(-n "\$\{KYOUKAI_FAST_TEST_WORKERS:-2\}"\)$', script,
                     flags=re.M)
    assert re.search(r"^make -s lint$", script, flags=re.M)
    assert "bash scripts/bootstrap.sh" in script  # a fresh clone: venv, dependencies, build
