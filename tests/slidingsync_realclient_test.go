package tests

import (
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// TestSlidingSyncWithMatrixJSSDK runs tests/js/slidingsync.mjs: matrix-js-sdk's
// SlidingSync client, set up as Element Web sets it up, subscribes to a room
// once (later requests omit the subscription) and must then see another
// user's 5 quick messages, a topic change and a joining member's display
// name: the server remembers the subscription for the connection.
func TestSlidingSyncWithMatrixJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client sliding sync test skipped in -short mode")
	}
	jsDir, node := jsNode(t)
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			runJSScenario(t, jsDir, node, "slidingsync.mjs", testserver.Start(t, backend).URL, "[slidingsync] PASS")
		})
	}
}

// TestSlidingSyncE2EEWithMatrixJSSDK runs tests/js/slidingsync_e2ee.mjs:
// matrix-js-sdk 43 clients with the Rust crypto stack syncing only through
// their SlidingSync (SlidingSyncSdk); room list, timeline, and encrypted
// messages that decrypt through the to_device and e2ee extensions, both
// ways, and for a device that appears later.
func TestSlidingSyncE2EEWithMatrixJSSDK(t *testing.T) {
	if testing.Short() {
		t.Skip("real-client sliding sync test skipped in -short mode")
	}
	jsDir, node := jsNode(t)
	for _, backend := range testserver.Backends {
		t.Run(backend, func(t *testing.T) {
			runJSScenario(t, jsDir, node, "slidingsync_e2ee.mjs", testserver.Start(t, backend).URL, "[slidingsync-e2ee] PASS")
		})
	}
}
