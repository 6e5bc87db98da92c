package ingest

import (
	"context"
	"fmt"

	"github.com/myelin-chat/myelin/internal/recovery"
)

// EDU results (myelin_federation_edus_total{result}).
const (
	eduOK      = "ok"
	eduError   = "error"
	eduPanic   = "panic"
	eduIgnored = "ignored" // no handler for its type
	eduRefused = "refused" // the residency policy refused it
)

// dispatchEDUs hands a transaction's EDUs, in order, after its PDUs, to the
// handlers of their types (Options.EDUs). An unknown type is ignored; a
// handler's error or panic is logged and counted: EDUs never fail a
// transaction. A repeated transaction is answered from the store before
// this, so its EDUs are not delivered twice.
func (e *Engine) dispatchEDUs(ctx context.Context, origin string, edus []EDU, tp *txnPolicy) {
	for i, edu := range edus {
		if ctx.Err() != nil {
			return
		}
		h := e.o.EDUs[edu.Type]
		if h == nil {
			e.m.edu("other", eduIgnored)
			continue
		}
		content, ok := tp.admitEDU(ctx, edu.Type, edu.Content)
		if !ok {
			e.m.edu(edu.Type, eduRefused)
			continue
		}
		var err error
		perr := recovery.Call("ingest_edu", func() error {
			err = h(ctx, origin, content)
			return nil
		}, "origin", origin, "edu_type", edu.Type)
		switch {
		case perr != nil:
			e.m.edu(edu.Type, eduPanic)
		case err != nil:
			e.m.edu(edu.Type, eduError)
			e.o.Logger.Info("inbound EDU not taken", "origin", origin, "edu_type", edu.Type, "index", i,
				"err", fmt.Sprint(err))
		default:
			e.m.edu(edu.Type, eduOK)
		}
	}
}
