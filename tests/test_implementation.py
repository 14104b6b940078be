"""Which implementation is live, and the switch that chooses it."""
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import kyoukai_fast


def test_compiled_module_loaded_when_expected():
    # `make test` sets KYOUKAI_FAST_EXPECT_COMPILED: then a build that silently fell back to pure
    # Python fails here instead of passing every test with the slow implementation.
    if os.environ.get("KYOUKAI_FAST_NO_EXTENSIONS"):
        assert kyoukai_fast.IMPLEMENTATION == "python"
        assert kyoukai_fast.KyoukaiProtocol is kyoukai_fast.KyoukaiProtocolPy
    elif os.environ.get("KYOUKAI_FAST_EXPECT_COMPILED"):
        assert kyoukai_fast.IMPLEMENTATION == "cython"
        assert kyoukai_fast.KyoukaiProtocol is kyoukai_fast.KyoukaiProtocolC
        from kyoukai_fast import _wsgi_c

        assert kyoukai_fast.to_wsgi_environment is _wsgi_c.to_wsgi_environment
    else:
        assert kyoukai_fast.IMPLEMENTATION in ("cython", "python")


def test_environment_variable_selects_pure_python():
    code = ("import kyoukai_fast as k; print(k.IMPLEMENTATION, k.KyoukaiProtocol.__module__, "
            "k.get_formatted_response.__module__)")
    env = dict(os.environ, KYOUKAI_FAST_NO_EXTENSIONS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    assert out == ["python", "kyoukai_fast._protocol_py", "kyoukai_fast._wsgi_py"]


def test_protocol_class_name_is_what_kyoukai_looks_up():
    assert kyoukai_fast.PROTOCOL_CLASS == "KyoukaiProtocol"
    assert getattr(kyoukai_fast, kyoukai_fast.PROTOCOL_CLASS) is kyoukai_fast.KyoukaiProtocol


def test_the_suite_exercises_the_intended_install():
    # KYOUKAI_FAST_TEST_INSTALLED is set when the suite runs against an installed wheel (CI's
    # wheel check, cibuildwheel): then the package, compiled modules included, must come from
    # site-packages and not from a source tree. Otherwise it must be this checkout's src/.
    package_dir = Path(kyoukai_fast.__file__).resolve().parent
    loaded = [Path(kyoukai_fast.__file__)]
    if kyoukai_fast.IMPLEMENTATION == "cython":
        from kyoukai_fast import _access_line_c, _protocol_c, _wsgi_c

        loaded += [Path(m.__file__) for m in (_protocol_c, _wsgi_c, _access_line_c)]
        assert all(p.suffix in (".so", ".pyd") for p in loaded[1:])
    assert all(p.resolve().parent == package_dir for p in loaded)
    if os.environ.get("KYOUKAI_FAST_TEST_INSTALLED"):
        site_dirs = {Path(sysconfig.get_paths()[key]).resolve() for key in ("purelib", "platlib")}
        assert package_dir.parent in site_dirs, (package_dir, site_dirs)
        assert not (package_dir.parent.parent / "setup.py").exists()
    else:
        assert package_dir == Path(__file__).resolve().parents[1] / "src" / "kyoukai_fast"
