package org.neurite

import android.content.Context
import android.net.wifi.WifiManager
import uniffi.neurite.Homeserver

/**
 * Android drops multicast packets addressed to other hosts unless an app holds a
 * [WifiManager.MulticastLock], so mDNS discovery only works while one is held. Hold this while
 * the homeserver runs with `mdnsEnabled = true` and its network is on; release it when the app
 * goes to the background (holding it costs battery).
 *
 * ```kotlin
 * val mdnsLock = NeuriteMulticastLock(context)
 * mdnsLock.acquire()
 * homeserver.start()
 * // onStop:  lifecycleScope.launch { mdnsLock.setNetworkEnabled(homeserver, false) }
 * // onStart: lifecycleScope.launch { mdnsLock.setNetworkEnabled(homeserver, true) }
 * ```
 *
 * Needs the `CHANGE_WIFI_MULTICAST_STATE` permission (declared in this library's manifest).
 */
class NeuriteMulticastLock(context: Context, tag: String = "neurite-mdns") : AutoCloseable {
    private val lock: WifiManager.MulticastLock =
        (context.applicationContext.getSystemService(Context.WIFI_SERVICE) as WifiManager)
            .createMulticastLock(tag)
            .apply { setReferenceCounted(false) }

    /** Whether the lock is held now. */
    val isHeld: Boolean
        get() = lock.isHeld

    /** Takes the lock (again calls are harmless). */
    fun acquire() {
        if (!lock.isHeld) lock.acquire()
    }

    /** Lets the lock go (again calls are harmless). */
    fun release() {
        if (lock.isHeld) lock.release()
    }

    /**
     * Switches the homeserver's peer-to-peer network and this lock together: the lock is taken
     * before the network (and mDNS) comes back, and let go once it is off (also when switching
     * off fails). Throws the homeserver's [uniffi.neurite.NeuriteException] if the switch fails.
     */
    suspend fun setNetworkEnabled(homeserver: Homeserver, enabled: Boolean) {
        if (enabled) acquire()
        try {
            homeserver.setNetworkEnabled(enabled)
        } finally {
            if (!enabled) release()
        }
    }

    override fun close() = release()
}
