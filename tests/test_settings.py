"""
Protocol settings: every one configurable from the component and documented, the server state a
component's connections share (by weak reference, or by identity for components without one),
and that state letting go of its event loop once its last connection is gone.
"""
from __future__ import annotations

import asyncio

import pytest
from werkzeug.wrappers import Response

from fakes import (
    FakeApp,
    FakeComponent,
    FakeTransport,
    refused,
    run,
    settle,
)
from wire import get, parse_responses


def test_every_setting_is_configurable_and_documented():
    import dataclasses
    import pathlib

    from kyoukai_fast import ProtocolConfig

    root = pathlib.Path(__file__).parent.parent
    # The full reference is docs/settings.md, and the README's "Settings" section links to it.
    readme_section = (root / "README.md").read_text().split("\n## Settings\n", 1)[1]
    assert "(docs/settings.md)" in readme_section.split("\n## ", 1)[0]
    reference = (root / "docs" / "settings.md").read_text()
    section = reference.split("\n## Limits and timeouts\n", 1)[1]
    # a valid value other than the default, for the settings that are not numbers or switches
    other_text = {"forwarded_allow_ips": "10.0.0.0/8,::1", "root_path": "/api",
                  "access_log_format": "%(h)s %(s)s"}
    for field in dataclasses.fields(ProtocolConfig):
        default = getattr(ProtocolConfig, field.name)
        assert f"| `{field.name}` |" in section, field.name
        if isinstance(default, bool):
            value = not default
        elif isinstance(default, str):
            value = other_text[field.name]
        else:
            value = default * 2 + 1
        changed = ProtocolConfig.from_mapping({field.name: value})
        assert getattr(changed, field.name) == value
    with pytest.raises(ValueError):
        ProtocolConfig.from_mapping({"header_timeout": -1})


def test_settings_reach_the_protocol_from_the_component(impl):
    # each limit is set through the component's configuration, as KyoukaiComponent(**cfg) does
    for cfg, data, status in [
        ({"max_url_size": 5}, get("/abcdef"), 414),
        ({"max_header_count": 1}, get("/", [("X-A", "1")]), 431),
        ({"max_header_size": 10}, get("/", [("X-A", "0123456789")]), 431),
        ({"max_body_size": 3}, get("/", method="POST", body=b"abcd"), 413),
    ]:
        refused(impl, data, status, **cfg)


class _SlottedComponent:
    """A component that cannot be weakly referenced (``__slots__`` without ``__weakref__``)."""

    __slots__ = ("app", "cfg", "connection_made", "connection_lost")

    def __init__(self, app, **cfg):
        plain = FakeComponent(app, **cfg)
        self.app, self.cfg = app, cfg
        self.connection_made, self.connection_lost = plain.connection_made, plain.connection_lost

    def get_server_name(self):
        return "testserver"


def test_settings_of_components_without_weak_references_are_their_own(impl):
    # Such components are remembered by identity (see the reused-id test below): each one's
    # settings reach its connections, one after the other, in both implementations.
    async def serve(max_url_size, target):
        app = FakeApp(lambda request: Response("ok"), loop=asyncio.get_running_loop())
        component = _SlottedComponent(app, max_url_size=max_url_size)
        protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(get(target))
        await settle()
        [response] = parse_responses(transport.take())
        protocol.connection_lost(None)
        return response.status

    async def main():
        for _ in range(5):
            assert await serve(5, "/abcdef") == 414
            assert await serve(8190, "/abcdef") == 200

    run(main())


def test_a_reused_id_does_not_inherit_another_components_settings():
    from kyoukai_fast._config import server_state_for

    app = FakeApp(lambda request: Response("ok"))
    first = _SlottedComponent(app, max_url_size=5)
    assert server_state_for(first, 8080).config.max_url_size == 5
    freed_id = id(first)
    del first
    # Objects of one size are usually allocated where the last one was freed: the first new
    # component would take the freed one's id, were it free.
    for _ in range(200):
        other = _SlottedComponent(app, max_url_size=8190)
        assert server_state_for(other, 8080).config.max_url_size == 8190
        if id(other) == freed_id:
            break


def test_a_server_without_connections_lets_go_of_its_loop(impl):
    # Components outlive their event loop in test suites and in apps that restart their server:
    # once the last connection is gone, nothing of the server may keep the loop alive.
    import gc
    import weakref

    from kyoukai_fast._config import existing_server_state

    loop = asyncio.new_event_loop()
    component = FakeComponent(FakeApp(lambda request: Response("ok")))

    async def serve():
        protocols = []
        for _ in range(2):
            protocol = impl.protocol_class(component, None, "127.0.0.1", 8080)
            transport = FakeTransport()
            protocol.connection_made(transport)
            protocol.data_received(get("/"))
            protocols.append((protocol, transport))
        await settle()
        state = existing_server_state(component)
        for protocol, transport in protocols:
            assert parse_responses(transport.take())[0].status == 200
            assert state._reaper is not None  # timeouts are checked while a connection lives
            protocol.connection_lost(None)
        assert state._reaper is None and not state.connections

    loop.run_until_complete(serve())
    loop.close()
    # what the test doubles themselves recorded (requests and signal events name the protocols)
    component.app.requests.clear()
    component.connection_made.events.clear()
    component.connection_lost.events.clear()
    dead_loop = weakref.ref(loop)
    del loop
    gc.collect()
    assert dead_loop() is None
    assert existing_server_state(component) is not None  # the component keeps its settings
