package syncv2

import "sync"

// toDeviceAcks remembers, per device, how far to-device messages were
// delivered but not yet deleted, so that a sync only issues the delete (a
// write) when its since token acknowledges something. A device not seen since
// start-up gets one delete to clear what an earlier run delivered.
type toDeviceAcks struct {
	mu      sync.Mutex
	pending map[string]int64 // device key → highest delivered, undeleted position (0: none)
}

func newToDeviceAcks() *toDeviceAcks { return &toDeviceAcks{pending: map[string]int64{}} }

func (a *toDeviceAcks) needsDelete(device string, ack int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	p, seen := a.pending[device]
	return !seen || (p > 0 && ack > 0)
}

func (a *toDeviceAcks) deleted(device string, ack int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pending[device] <= ack {
		a.pending[device] = 0
	}
}

func (a *toDeviceAcks) delivered(device string, upTo int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending) >= 1_000_000 {
		a.pending = map[string]int64{} // every device then gets one delete again
	}
	a.pending[device] = max(a.pending[device], upTo)
}
