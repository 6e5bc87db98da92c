package syncv2

import (
	"testing"

	"github.com/tidwall/gjson"

	"github.com/myelin-chat/myelin/storage"
)

// TestReceiptEventPrefersUnthreaded: a user's unthreaded and threaded read
// receipts on the same event clash in the m.receipt format; the unthreaded
// one is shown whichever order they come in (MSC4102, Complement's
// TestThreadReceiptsInSyncMSC4102). Receipts on different events both stay.
func TestReceiptEventPrefersUnthreaded(t *testing.T) {
	un := storage.Receipt{RoomID: "!r", UserID: "@a:x", Type: "m.read", EventID: "$b", TS: 1}
	th := storage.Receipt{RoomID: "!r", UserID: "@a:x", Type: "m.read", EventID: "$b", ThreadID: "$a", TS: 2}
	other := storage.Receipt{RoomID: "!r", UserID: "@a:x", Type: "m.read", EventID: "$c", ThreadID: "$a", TS: 3}
	for _, order := range [][]storage.Receipt{{un, th, other}, {th, un, other}} {
		ev := gjson.ParseBytes(receiptEvent("@a:x", order))
		got := ev.Get(`content.\$b.m\.read.@a:x`)
		if !got.Exists() || got.Get("thread_id").Exists() || got.Get("ts").Int() != 1 {
			t.Errorf("receipt on $b = %s, want the unthreaded one", got.Raw)
		}
		if ev.Get(`content.\$c.m\.read.@a:x.thread_id`).Str != "$a" {
			t.Errorf("the threaded receipt on another event is lost: %s", ev.Raw)
		}
	}
}
