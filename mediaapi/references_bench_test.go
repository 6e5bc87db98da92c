package mediaapi

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/storage"
)

var benchPDUs = map[string][]byte{
	"text":  []byte(`{"type":"m.room.message","sender":"@a:a.test","content":{"msgtype":"m.text","body":"hello there, how are you doing today?"}}`),
	"image": []byte(`{"type":"m.room.message","sender":"@a:a.test","content":{"msgtype":"m.image","body":"cat.png","url":"mxc://a.test/AbCdEfGhIjKlMnOpQrStUvWxYz","info":{"mimetype":"image/png","size":12345,"w":800,"h":600,"thumbnail_url":"mxc://a.test/ThUmBnAiLaBcDeFgHiJkLmNoPq"}}}`),
	"html":  []byte(`{"type":"m.room.message","sender":"@a:a.test","content":{"msgtype":"m.text","body":"look","format":"org.matrix.custom.html","formatted_body":"<p>look at <b>this</b> <img src=\"mxc://a.test/EmOjIaBcDeFgHiJkLmNoPqRsTu\" alt=\":cat:\" height=\"32\"> and this</p>"}}`),
}

// BenchmarkReferences: extracting an event's mxc:// references (the
// follower's work per event, before the store).
func BenchmarkReferences(b *testing.B) {
	for _, name := range []string{"text", "image", "html"} {
		b.Run(name, func(b *testing.B) {
			pdu := benchPDUs[name]
			for b.Loop() {
				References(pdu)
			}
		})
	}
}

// BenchmarkRecordReferences: the follower's handler on pages of 500 events
// (one in four an image with a thumbnail) on SQLite: ns/op is per event.
func BenchmarkRecordReferences(b *testing.B) {
	db, err := storage.Open(context.Background(), "sqlite:"+filepath.Join(b.TempDir(), "bench.db"), 4)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	cfg := config.Default()
	cfg.DataDir = b.TempDir()
	s, err := New(Options{Store: db, Config: cfg})
	if err != nil {
		b.Fatal(err)
	}
	const page = 500
	pos := int64(0)
	evs := make([]*storage.Event, page)
	for b.Loop() {
		for i := range evs {
			pos++
			pdu := benchPDUs["text"]
			if pos%4 == 0 {
				pdu = []byte(fmt.Sprintf(`{"type":"m.room.message","content":{"msgtype":"m.image","url":"mxc://a.test/m%d","info":{"thumbnail_url":"mxc://a.test/t%d"}}}`, pos, pos))
			}
			evs[i] = &storage.Event{EventID: fmt.Sprintf("$e%d", pos), RoomID: "!r:a.test", StreamPos: pos, JSON: pdu}
		}
		if err := s.RecordReferences(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(pos), "ns/event")
}
