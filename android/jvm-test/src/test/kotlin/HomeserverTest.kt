import java.net.URI
import java.net.URLEncoder
import java.net.http.HttpClient
import java.net.http.HttpRequest
import java.net.http.HttpResponse
import java.nio.charset.StandardCharsets
import java.nio.file.Files
import java.time.Duration
import java.util.concurrent.CopyOnWriteArrayList
import java.util.concurrent.TimeUnit
import java.util.concurrent.atomic.AtomicInteger
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.json.JSONObject
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertNotEquals
import org.junit.jupiter.api.Assertions.assertNull
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Assertions.fail
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.Timeout
import org.junit.jupiter.api.assertThrows
import uniffi.neurite.Discovery
import uniffi.neurite.Homeserver
import uniffi.neurite.HomeserverConfig
import uniffi.neurite.HomeserverListener
import uniffi.neurite.HomeserverState
import uniffi.neurite.NeuriteException
import uniffi.neurite.PeerInfo
import uniffi.neurite.PeerPath
import uniffi.neurite.RegistrationMode
import uniffi.neurite.Session

/**
 * The generated Kotlin bindings as an Android app uses them, on the host JVM with the Linux
 * build of the library: two homeservers in one process that know each other as static peers
 * (loopback only, mDNS off), an account on each made through the library, and a message from
 * one to the other through the Matrix client API over HTTP; pairing with `addPeer` and
 * switching the network off and on; several listeners and their handles.
 */
class HomeserverTest {
    private val waitMs = 30_000L

    private fun config(
        dir: String,
        staticPeers: List<String> = emptyList(),
        p2p: Boolean = true,
        relays: List<String> = emptyList(),
        serveRelay: Boolean = false,
    ) = HomeserverConfig(
        dataDir = dir,
        clientPort = 0u,
        p2pListen = if (p2p) listOf("/ip4/127.0.0.1/tcp/0") else emptyList(),
        staticPeers = staticPeers,
        mdnsEnabled = false,
        relays = relays,
        serveRelay = serveRelay,
        registration = RegistrationMode.Disabled,
        logFilter = null,
    )

    private fun tempDir(name: String) = Files.createTempDirectory(name).toString()

    /** The state and peer callbacks, and a bounded wait for the ones a test expects. */
    private class Recorder : HomeserverListener {
        val states = CopyOnWriteArrayList<HomeserverState>()
        val connected = CopyOnWriteArrayList<PeerInfo>()
        val disconnected = CopyOnWriteArrayList<String>()
        val addresses = CopyOnWriteArrayList<List<String>>()
        private val lock = Object()

        override fun onStateChanged(state: HomeserverState) = record { states.add(state) }
        override fun onPeerConnected(peer: PeerInfo) = record { connected.add(peer) }
        override fun onPeerDisconnected(peerId: String) = record { disconnected.add(peerId) }
        override fun onAddressesChanged(addrs: List<String>) = record { addresses.add(addrs) }

        private fun record(add: () -> Unit) = synchronized(lock) {
            add()
            lock.notifyAll()
        }

        fun waitFor(what: String, timeoutMs: Long, check: () -> Boolean) = synchronized(lock) {
            val deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs)
            while (!check()) {
                val left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime())
                if (left <= 0) fail<Unit>("timed out waiting for $what")
                lock.wait(left)
            }
        }
    }

    /** A logged-in user talking to the client API with java.net.http. */
    private class Client(val session: Session) {
        private val http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build()
        private val base = session.homeserverUrl + "/_matrix/client/v3"

        fun call(method: String, path: String, body: JSONObject? = null): Pair<Int, JSONObject> {
            val publisher = if (body == null) HttpRequest.BodyPublishers.noBody()
            else HttpRequest.BodyPublishers.ofString(body.toString())
            val request = HttpRequest.newBuilder(URI(base + path))
                .timeout(Duration.ofSeconds(30))
                .header("Authorization", "Bearer " + session.accessToken)
                .header("Content-Type", "application/json")
                .method(method, publisher)
                .build()
            val response = http.send(request, HttpResponse.BodyHandlers.ofString())
            return response.statusCode() to JSONObject(response.body())
        }

        fun ok(method: String, path: String, body: JSONObject? = null): JSONObject {
            val (status, json) = call(method, path, body)
            assertEquals(200, status, "$method $path: $json")
            return json
        }

        /** Long-polls /sync until [check] holds for a response, within [timeoutMs]. */
        fun syncUntil(what: String, timeoutMs: Long, check: (JSONObject) -> Boolean): JSONObject {
            val deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(timeoutMs)
            var since: String? = null
            while (System.nanoTime() < deadline) {
                val query = "/sync?timeout=2000" + (since?.let { "&since=" + enc(it) } ?: "")
                val sync = ok("GET", query)
                if (check(sync)) return sync
                since = sync.getString("next_batch")
            }
            fail<Unit>("timed out waiting for $what")
            error("unreachable")
        }
    }

    @Test
    @Timeout(value = 180, unit = TimeUnit.SECONDS)
    fun twoHomeserversExchangeAMessageThroughTheClientApi() = runBlocking {
        Homeserver(config(tempDir("neurite-b"))).use { b ->
            b.start()
            val bAddrs = b.listenAddrs()
            assertTrue(bAddrs.all { it.endsWith("/p2p/" + b.peerId()) }, bAddrs.toString())
            Homeserver(config(tempDir("neurite-a"), staticPeers = bAddrs)).use { a ->
                assertNotEquals(a.serverName(), b.serverName())
                val seen = Recorder()
                val handle = a.addListener(seen)
                a.start()
                assertThrows<NeuriteException.AlreadyRunning> { runBlocking { a.start() } }
                seen.waitFor("A to connect to its static peer B", waitMs) {
                    seen.connected.any { it.peerId == b.peerId() }
                }
                assertTrue(a.peers().any {
                    it.peerId == b.peerId() && it.connected && it.discovered == Discovery.STATIC
                })

                val alice = Client(withTimeout(waitMs) { a.registerUser("alice", "alice's secret") })
                val bob = Client(withTimeout(waitMs) { b.registerUser("bob", "bob's secret") })
                assertEquals("@alice:" + a.serverName(), alice.session.userId)
                assertEquals("@bob:" + b.serverName(), bob.session.userId)
                assertThrows<NeuriteException.UserExists> {
                    runBlocking { a.registerUser("alice", "again") }
                }
                assertThrows<NeuriteException.InvalidCredentials> {
                    runBlocking { b.login("bob", "wrong") }
                }

                val room = alice.ok(
                    "POST", "/createRoom",
                    JSONObject().put("preset", "private_chat").put("name", "Across"),
                ).getString("room_id")
                alice.ok("POST", "/rooms/${enc(room)}/invite",
                    JSONObject().put("user_id", bob.session.userId))
                bob.syncUntil("bob's invite", waitMs) {
                    it.optJSONObject("rooms")?.optJSONObject("invite")?.has(room) == true
                }
                bob.ok("POST", "/join/${enc(room)}", JSONObject())
                alice.syncUntil("bob's join on A", waitMs) { sync ->
                    joinedMembers(sync, room) == 2
                }

                val text = "hello from alice on ${a.serverName()}"
                val eventId = alice.ok(
                    "PUT", "/rooms/${enc(room)}/send/m.room.message/txn${txn.incrementAndGet()}",
                    JSONObject().put("msgtype", "m.text").put("body", text),
                ).getString("event_id")
                val sync = bob.syncUntil("alice's message on B", waitMs) { sync ->
                    timeline(sync, room).any { it.optString("event_id") == eventId }
                }
                val message = timeline(sync, room).first { it.optString("event_id") == eventId }
                assertEquals(alice.session.userId, message.getString("sender"))
                assertEquals(text, message.getJSONObject("content").getString("body"))

                a.stop()
                b.stop()
                assertNull(a.clientBaseUrl())
                assertThrows<NeuriteException.NotRunning> { runBlocking { a.stop() } }
                assertEquals(HomeserverState.Running, seen.states[1])
                assertEquals(HomeserverState.Stopped, seen.states.last())
                handle.cancel()
            }
        }
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    fun aRelayReservationGivesACircuitAddressOtherPeersReach() = runBlocking {
        // R serves as a relay; A keeps a reservation on it; C knows A only by its circuit
        // address, as a QR code made on another network would give it.
        Homeserver(config(tempDir("neurite-r"), serveRelay = true)).use { r ->
            r.start()
            val relayAddr = r.listenAddrs().first()
            Homeserver(config(tempDir("neurite-a"), relays = listOf(relayAddr))).use { a ->
                val seenA = Recorder()
                val handleA = a.addListener(seenA)
                a.start()
                fun circuit(addrs: List<String>) = addrs.firstOrNull { it.contains("/p2p-circuit/") }
                seenA.waitFor("A's circuit address", waitMs) { circuit(a.listenAddrs()) != null }
                val aCircuit = circuit(a.listenAddrs())!!
                assertTrue(aCircuit.startsWith(relayAddr), aCircuit)
                assertTrue(aCircuit.endsWith("/p2p/${a.peerId()}"), aCircuit)
                seenA.waitFor("onAddressesChanged with the circuit address", waitMs) {
                    seenA.addresses.any { circuit(it) == aCircuit }
                }
                val relay = a.peers().first { it.peerId == r.peerId() }
                assertEquals(Discovery.RELAY, relay.discovered)
                assertEquals(null, relay.serverName)
                assertEquals(PeerPath.DIRECT, relay.path)
                Homeserver(config(tempDir("neurite-c"), staticPeers = listOf(aCircuit))).use { c ->
                    val seenC = Recorder()
                    val handleC = c.addListener(seenC)
                    c.start()
                    seenC.waitFor("C reaching A", waitMs) { seenC.connected.any { it.peerId == a.peerId() } }
                    val first = seenC.connected.first { it.peerId == a.peerId() }
                    assertTrue(first.path != null, first.toString())
                    handleC.cancel()
                    c.stop()
                }
                handleA.cancel()
                a.stop()
            }
            r.stop()
        }
    }

    @Test
    @Timeout(value = 120, unit = TimeUnit.SECONDS)
    fun addPeerAndSwitchingTheNetwork() = runBlocking {
        Homeserver(config(tempDir("neurite-b"))).use { b ->
            Homeserver(config(tempDir("neurite-a"))).use { a ->
                val seen = Recorder()
                a.addListener(seen).use {
                    assertTrue(a.peers().isEmpty(), "stopped: no peers")
                    assertThrows<NeuriteException.InvalidConfig> {
                        runBlocking { a.addPeer("/ip4/127.0.0.1/tcp/4001") }
                    }
                    assertThrows<NeuriteException.NotRunning> {
                        runBlocking { a.addPeer("/ip4/127.0.0.1/tcp/4001/p2p/" + b.peerId()) }
                    }
                    a.start()
                    b.start()
                    assertThrows<NeuriteException.InvalidConfig> {
                        runBlocking { a.addPeer("garbage") }
                    }

                    // Pair A with B the way a QR code would.
                    a.addPeer(b.listenAddrs().first())
                    seen.waitFor("A to connect to B", waitMs) {
                        seen.connected.any { it.peerId == b.peerId() }
                    }
                    val listed = a.peers().first { it.peerId == b.peerId() }
                    assertTrue(listed.connected)
                    assertEquals(Discovery.STATIC, listed.discovered)
                    assertEquals(b.serverName(), listed.serverName)

                    // Background: connections close and adding a peer is refused.
                    a.setNetworkEnabled(false)
                    assertTrue(a.listenAddrs().isEmpty())
                    seen.waitFor("A to drop B", waitMs) { b.peerId() in seen.disconnected }
                    assertThrows<NeuriteException.Network> {
                        runBlocking { a.addPeer(b.listenAddrs().first()) }
                    }

                    // Foreground: A listens again and redials B.
                    val before = seen.connected.size
                    a.setNetworkEnabled(true)
                    assertTrue(a.listenAddrs().isNotEmpty())
                    seen.waitFor("A to reconnect to B", waitMs) {
                        seen.connected.drop(before).any { it.peerId == b.peerId() }
                    }
                    a.stop()
                    b.stop()
                }
            }
        }
    }

    @Test
    @Timeout(value = 60, unit = TimeUnit.SECONDS)
    fun everyListenerHearsEventsUntilItsHandleIsCancelled() = runBlocking {
        Homeserver(config(tempDir("neurite-listeners"), p2p = false)).use { hs ->
            val first = Recorder()
            val second = Recorder()
            val firstHandle = hs.addListener(first)
            val secondHandle = hs.addListener(second)
            val running = listOf(HomeserverState.Starting, HomeserverState.Running)
            hs.start()
            assertEquals(running, first.states.toList())
            assertEquals(running, second.states.toList())

            firstHandle.cancel()
            firstHandle.cancel() // again: nothing happens
            hs.stop()
            assertEquals(running, first.states.toList())
            assertEquals(
                running + listOf(HomeserverState.Stopping, HomeserverState.Stopped),
                second.states.toList(),
            )

            // Closing a handle (what the garbage collector eventually does) unregisters too.
            secondHandle.close()
            hs.start()
            hs.stop()
            assertEquals(4, second.states.size)
            firstHandle.close()
        }
    }

    @Test
    fun badConfigThrowsInvalidConfig() {
        val dir = tempDir("neurite-bad")
        for (bad in listOf(
            config(""),
            config(dir, staticPeers = listOf("/ip4/127.0.0.1/tcp/1")),
            config(dir).copy(p2pListen = listOf("not a multiaddr")),
            config(dir).copy(registration = RegistrationMode.Token("")),
        )) {
            assertThrows<NeuriteException.InvalidConfig> { Homeserver(bad) }
        }
    }

    companion object {
        private val txn = AtomicInteger()

        fun enc(s: String): String = URLEncoder.encode(s, StandardCharsets.UTF_8)

        fun timeline(sync: JSONObject, room: String): List<JSONObject> {
            val events = sync.optJSONObject("rooms")?.optJSONObject("join")?.optJSONObject(room)
                ?.optJSONObject("timeline")?.optJSONArray("events") ?: return emptyList()
            return (0 until events.length()).map { events.getJSONObject(it) }
        }

        fun joinedMembers(sync: JSONObject, room: String): Int =
            sync.optJSONObject("rooms")?.optJSONObject("join")?.optJSONObject(room)
                ?.optJSONObject("summary")?.optInt("m.joined_member_count", -1) ?: -1
    }
}
