"""
Coverage-guided fuzzing of both protocol implementations with atheris (libFuzzer), for long runs.

    .venv/bin/pip install atheris                 # optional, not needed by the test suite
    PYTHONPATH=src:tests .venv/bin/python fuzz/fuzz_protocol.py /tmp/kf-corpus fuzz/seeds \
        -max_total_time=3600

Each input is decoded by ``fuzzing.steps_from_bytes`` (read sizes, flow control, a disconnect,
a timeout check, an early EOF, small limits, then the bytes a client sends) and played against
the compiled and the pure-Python protocol; the properties are those of ``tests/test_fuzz.py``
(no escaped exception, no hang, well-formed responses, errors close, identical bytes from both
twins). A failing input is saved by libFuzzer
as ``crash-*``; replay it with ``fuzz/fuzz_protocol.py crash-<hash>``. The pure-Python modules
of kyoukai_fast are instrumented for coverage (the compiled twin and httptools are not).
"""
import os
import sys

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "src"), os.path.join(HERE, "..", "tests")]

with atheris.instrument_imports(include=["kyoukai_fast"]):
    import kyoukai_fast.compat
    from kyoukai_fast import _protocol_c, _protocol_py

kyoukai_fast.compat.apply()

from fuzzing import check_outcome, check_same, run_connection, steps_from_bytes  # noqa: E402


def test_one_input(data: bytes) -> None:
    steps, cfg = steps_from_bytes(data)
    compiled = run_connection(_protocol_c.KyoukaiProtocol, steps, cfg)
    python = run_connection(_protocol_py.KyoukaiProtocol, steps, cfg)
    check_outcome(compiled)
    check_outcome(python)
    check_same(compiled, python)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
