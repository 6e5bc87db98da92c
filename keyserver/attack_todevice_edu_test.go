package keyserver

import (
	"context"
	"fmt"
	"testing"
)

// An inbound m.direct_to_device EDU with nothing for our users (messages
// for another server's users, or none at all) stores nothing: no
// transaction record, no stream position. Otherwise a server flooding
// unique message_ids grows to_device_txns for a day with nothing delivered.
func TestAttackToDeviceEDUNothingForUsStoresNothing(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newRemoteEnv(t, backend)
		ctx := context.Background()
		for i, msgs := range []string{
			`{"@x:third.example":{"*":{"a":1}},"@y:remote.example":{"D":{"a":1}}}`,
			`{}`,
		} {
			content := fmt.Sprintf(`{"sender":"@bob:remote.example","type":"m.test","message_id":"m%d","messages":%s}`, i, msgs)
			if err := e.s.ReceiveToDeviceEDU(ctx, "remote.example", []byte(content)); err != nil {
				t.Fatalf("EDU %d: %v", i, err)
			}
		}
		rows, err := e.db.Query(ctx, `SELECT count(*) FROM to_device_txns WHERE device_id = 'remote.example'`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var n int
		for rows.Next() {
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
		}
		if n != 0 {
			t.Errorf("%d to-device transaction records stored for EDUs with nothing for our users", n)
		}
	})
}
