"""The generated Python bindings against the host-built library, in one process: the life
cycle (start, stop, restart on the same data), accounts made through the library, peer
callbacks between two homeservers that know each other as static peers (mDNS off, loopback
only), several listeners and their handles, the async peer calls, the log sink, and errors
raised as exceptions.

Run by bindings/test.sh; by hand: python -m pytest bindings/python-test after generating.
"""

import asyncio
import json
import threading
import urllib.error
import urllib.request

import pytest

import neurite

TIMEOUT = 20  # seconds for anything that crosses the network


def make_config(data_dir, static_peers=(), p2p=True, relays=(), serve_relay=False):
    return neurite.HomeserverConfig(
        data_dir=str(data_dir),
        client_port=0,
        p2p_listen=["/ip4/127.0.0.1/tcp/0"] if p2p else [],
        static_peers=list(static_peers),
        mdns_enabled=False,
        relays=list(relays),
        serve_relay=serve_relay,
        registration=neurite.RegistrationMode.DISABLED(),
        log_filter=None,
    )


def http(url, token=None, body=None):
    """(status, JSON body) of a client API request; error statuses are returned too."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


class Recorder(neurite.HomeserverListener):
    """Keeps every callback; waits on a condition for the ones a test expects."""

    def __init__(self):
        self.cond = threading.Condition()
        self.states = []
        self.connected = []
        self.disconnected = []
        self.addresses = []

    def _add(self, items, item):
        with self.cond:
            items.append(item)
            self.cond.notify_all()

    def on_state_changed(self, state):
        self._add(self.states, state)

    def on_peer_connected(self, peer):
        self._add(self.connected, peer)

    def on_peer_disconnected(self, peer_id):
        self._add(self.disconnected, peer_id)

    def on_addresses_changed(self, addrs):
        self._add(self.addresses, addrs)

    def wait_for(self, what, check):
        with self.cond:
            assert self.cond.wait_for(check, TIMEOUT), f"timed out waiting for {what}"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, TIMEOUT * 3))


def test_bad_config_raises_invalid_config(tmp_path):
    bad = [
        make_config(""),
        make_config(tmp_path, static_peers=["/ip4/127.0.0.1/tcp/1"]),  # no /p2p/<id>
        make_config(tmp_path, static_peers=["not a multiaddr"]),
    ]
    listen = make_config(tmp_path)
    listen.p2p_listen = ["/ip4/127.0.0.1/tcp/nope"]
    bad.append(listen)
    token = make_config(tmp_path)
    token.registration = neurite.RegistrationMode.TOKEN(token="")
    bad.append(token)
    filt = make_config(tmp_path)
    filt.log_filter = "neurite_core=loud"
    bad.append(filt)
    for config in bad:
        with pytest.raises(neurite.NeuriteError.InvalidConfig):
            neurite.Homeserver(config)


def test_federation_limits_default_to_a_phones_and_are_checked(tmp_path):
    limits = neurite.default_federation_limits()
    assert limits.max_connections == 64 and limits.request_timeout_secs == 60
    config = make_config(tmp_path)
    assert config.federation_limits is None  # the default: keep the node's own limits
    limits.max_requests_per_peer = 0
    config.federation_limits = limits
    with pytest.raises(neurite.NeuriteError.InvalidConfig):
        neurite.Homeserver(config)
    limits.max_requests_per_peer = 4
    neurite.Homeserver(config)


def test_start_stop_and_restart(tmp_path):
    async def main():
        hs = neurite.Homeserver(make_config(tmp_path))
        seen = Recorder()
        handle = hs.add_listener(seen)  # the listener stays registered while this lives
        name, peer_id = hs.server_name(), hs.peer_id()
        assert hs.client_base_url() is None
        with pytest.raises(neurite.NeuriteError.NotRunning):
            await hs.stop()

        await hs.start()
        url = hs.client_base_url()
        assert url.startswith("http://127.0.0.1:")
        status, versions = http(url + "/_matrix/client/versions")
        assert status == 200 and versions["versions"]
        addrs = hs.listen_addrs()
        assert addrs and all(a.endswith("/p2p/" + peer_id) for a in addrs), addrs
        with pytest.raises(neurite.NeuriteError.AlreadyRunning):
            await hs.start()
        assert hs.client_base_url() == url  # the failed start changed nothing

        session = await hs.register_user("alice", "correct horse")
        await hs.stop()
        assert hs.client_base_url() is None
        assert hs.listen_addrs() == []
        with pytest.raises(neurite.NeuriteError.NotRunning):
            await hs.stop()
        with pytest.raises(neurite.NeuriteError.NotRunning):
            await hs.login("alice", "correct horse")

        # Same object, same data: the account and the identity survive the restart.
        await hs.start()
        assert hs.server_name() == name and hs.peer_id() == peer_id
        again = await hs.login("alice", "correct horse")
        assert again.user_id == session.user_id
        status, _ = http(again.homeserver_url + "/_matrix/client/v3/account/whoami",
                         again.access_token)
        assert status == 200
        await hs.stop()

        # A new object on the same directory too.
        other = neurite.Homeserver(make_config(tmp_path))
        assert other.server_name() == name
        await other.start()
        await other.stop()

        S = neurite.HomeserverState
        assert seen.states == [S.STARTING(), S.RUNNING(), S.STOPPING(), S.STOPPED()] * 2, seen.states
        handle.cancel()

    run(main())


def test_registration_and_login(tmp_path):
    async def main():
        hs = neurite.Homeserver(make_config(tmp_path, p2p=False))
        with pytest.raises(neurite.NeuriteError.NotRunning):
            await hs.register_user("alice", "correct horse")
        await hs.start()
        try:
            session = await hs.register_user("alice", "correct horse")
            assert session.user_id == "@alice:" + hs.server_name()
            assert session.homeserver_url == hs.client_base_url()
            assert session.device_id and session.access_token
            status, whoami = http(session.homeserver_url + "/_matrix/client/v3/account/whoami",
                                  session.access_token)
            assert (status, whoami["user_id"]) == (200, session.user_id)

            with pytest.raises(neurite.NeuriteError.UserExists):
                await hs.register_user("alice", "another")
            with pytest.raises(neurite.NeuriteError.InvalidUsername):
                await hs.register_user("Not Valid!", "pw")
            with pytest.raises(neurite.NeuriteError.InvalidCredentials):
                await hs.login("alice", "wrong")
            with pytest.raises(neurite.NeuriteError.InvalidCredentials):
                await hs.login("nobody", "correct horse")

            by_id = await hs.login(session.user_id, "correct horse")
            assert by_id.user_id == session.user_id
            assert by_id.device_id != session.device_id
            assert by_id.access_token != session.access_token

            # Registration is disabled for clients: only the library creates accounts.
            status, err = http(hs.client_base_url() + "/_matrix/client/v3/register",
                               body={"username": "mallory", "password": "pw",
                                     "auth": {"type": "m.login.dummy"}})
            assert status == 403 and err["errcode"] == "M_FORBIDDEN", (status, err)
        finally:
            await hs.stop()

    run(main())


def test_a_relay_reservation_gives_a_circuit_address_other_peers_reach(tmp_path):
    async def main():
        # R serves as a relay; A keeps a reservation on it; C knows A only by its circuit
        # address (as a QR code made on another network would give it).
        r = neurite.Homeserver(make_config(tmp_path / "r", serve_relay=True))
        await r.start()
        a = neurite.Homeserver(make_config(tmp_path / "a", relays=r.listen_addrs()[:1]))
        seen_a = Recorder()
        handle_a = a.add_listener(seen_a)
        await a.start()
        c = None
        try:
            def circuit(addrs):
                return next((x for x in addrs if "/p2p-circuit/" in x), None)
            seen_a.wait_for("A's circuit address",
                            lambda: circuit(a.listen_addrs()) is not None)
            a_circuit = circuit(a.listen_addrs())
            assert a_circuit.startswith(r.listen_addrs()[0]), a_circuit
            assert a_circuit.endswith("/p2p/" + a.peer_id()), a_circuit
            seen_a.wait_for("on_addresses_changed with the circuit address",
                            lambda: any(circuit(x) == a_circuit for x in seen_a.addresses))
            listed = {p.peer_id: p for p in await a.peers()}
            relay = listed[r.peer_id()]
            assert relay.discovered == neurite.Discovery.RELAY, relay
            assert relay.server_name is None, relay
            assert relay.path == neurite.PeerPath.DIRECT, relay

            c = neurite.Homeserver(make_config(tmp_path / "c", static_peers=[a_circuit]))
            seen_c = Recorder()
            handle_c = c.add_listener(seen_c)
            await c.start()
            seen_c.wait_for("C reaching A", lambda: any(p.peer_id == a.peer_id() for p in seen_c.connected))
            first = next(p for p in seen_c.connected if p.peer_id == a.peer_id())
            assert first.path in (neurite.PeerPath.RELAYED, neurite.PeerPath.DIRECT), first
            handle_c.cancel()
        finally:
            if c is not None:
                await c.stop()
            await a.stop()
            await r.stop()
            handle_a.cancel()

    run(main())


def test_static_peers_connect_and_fire_callbacks(tmp_path):
    async def main():
        b = neurite.Homeserver(make_config(tmp_path / "b"))
        seen_b = Recorder()
        handle_b = b.add_listener(seen_b)
        await b.start()
        a = neurite.Homeserver(make_config(tmp_path / "a", static_peers=b.listen_addrs()))
        seen_a = Recorder()
        handle_a = a.add_listener(seen_a)
        await a.start()
        try:
            seen_a.wait_for("A's on_peer_connected(B)",
                            lambda: any(p.peer_id == b.peer_id() for p in seen_a.connected))
            seen_b.wait_for("B's on_peer_connected(A)",
                            lambda: any(p.peer_id == a.peer_id() for p in seen_b.connected))
            peer = next(p for p in seen_a.connected if p.peer_id == b.peer_id())
            assert peer.connected
            assert peer.discovered == neurite.Discovery.STATIC, peer
            listed = {p.peer_id: p for p in await a.peers()}
            assert listed[b.peer_id()].connected
            assert listed[b.peer_id()].server_name == b.server_name()

            # B goes away: A hears of it.
            await b.stop()
            seen_a.wait_for("A's on_peer_disconnected(B)",
                            lambda: b.peer_id() in seen_a.disconnected)
        finally:
            await a.stop()
            if b.client_base_url() is not None:
                await b.stop()
            handle_a.cancel()
            handle_b.cancel()

    run(main())


def test_add_peer_rejects_bad_addresses(tmp_path):
    async def main():
        hs = neurite.Homeserver(make_config(tmp_path))
        with pytest.raises(neurite.NeuriteError.InvalidConfig):
            await hs.add_peer("/ip4/127.0.0.1/tcp/4001")
        await hs.start()
        try:
            with pytest.raises(neurite.NeuriteError.InvalidConfig):
                await hs.add_peer("garbage")
        finally:
            await hs.stop()
        with pytest.raises(neurite.NeuriteError.NotRunning):
            await hs.add_peer("/ip4/127.0.0.1/tcp/4001/p2p/" + hs.peer_id())

    run(main())


def test_add_peer_and_switching_the_network(tmp_path):
    async def main():
        a = neurite.Homeserver(make_config(tmp_path / "a"))
        b = neurite.Homeserver(make_config(tmp_path / "b"))
        seen_a = Recorder()
        handle = a.add_listener(seen_a)
        assert await a.peers() == []  # stopped: nothing known
        await a.start()
        await b.start()
        try:
            # Pair A with B the way a QR code would, without blocking the event loop.
            await a.add_peer(b.listen_addrs()[0])
            seen_a.wait_for("A's on_peer_connected(B)",
                            lambda: any(p.peer_id == b.peer_id() for p in seen_a.connected))
            listed = {p.peer_id: p for p in await a.peers()}
            assert listed[b.peer_id()].connected
            assert listed[b.peer_id()].discovered == neurite.Discovery.STATIC

            # Background: listeners and connections close; adding a peer is refused.
            await a.set_network_enabled(False)
            assert a.listen_addrs() == []
            seen_a.wait_for("A's on_peer_disconnected(B)",
                            lambda: b.peer_id() in seen_a.disconnected)
            with pytest.raises(neurite.NeuriteError.Network):
                await a.add_peer(b.listen_addrs()[0])

            # Foreground again: A listens and redials B.
            before = len(seen_a.connected)
            await a.set_network_enabled(True)
            assert a.listen_addrs()
            seen_a.wait_for("A to reconnect to B",
                            lambda: any(p.peer_id == b.peer_id()
                                        for p in seen_a.connected[before:]))
        finally:
            await a.stop()
            await b.stop()
            handle.cancel()

    run(main())


def test_every_listener_hears_events_until_its_handle_is_cancelled(tmp_path):
    async def main():
        hs = neurite.Homeserver(make_config(tmp_path, p2p=False))
        first, second = Recorder(), Recorder()
        first_handle = hs.add_listener(first)
        second_handle = hs.add_listener(second)
        S = neurite.HomeserverState
        await hs.start()
        assert first.states == [S.STARTING(), S.RUNNING()], first.states
        assert second.states == [S.STARTING(), S.RUNNING()], second.states

        first_handle.cancel()
        first_handle.cancel()  # again: nothing happens
        await hs.stop()
        assert first.states == [S.STARTING(), S.RUNNING()], first.states
        assert second.states == [S.STARTING(), S.RUNNING(), S.STOPPING(), S.STOPPED()], \
            second.states

        # Letting a handle go unregisters its listener too.
        del second_handle
        await hs.start()
        await hs.stop()
        assert len(second.states) == 4, second.states

    run(main())


def test_log_sink_receives_lines(tmp_path):
    class Lines(neurite.LogSink):
        def __init__(self):
            self.lines = []

        def log(self, level, target, message):
            self.lines.append((level, target, message))

    with pytest.raises(neurite.NeuriteError.InvalidConfig):
        neurite.set_log_sink(Lines(), "=bad=")
    sink = Lines()
    neurite.set_log_sink(sink, "info")

    async def main():
        hs = neurite.Homeserver(make_config(tmp_path, p2p=False))
        await hs.start()
        await hs.stop()

    run(main())
    assert sink.lines, "no log line arrived"
    assert all(isinstance(level, neurite.LogLevel) for level, _, _ in sink.lines)
    assert any(target.startswith("neurite") for _, target, _ in sink.lines), sink.lines[:5]
