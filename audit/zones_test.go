package audit_test

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/myelin-chat/myelin/audit"
	"github.com/myelin-chat/myelin/internal/pgtest"
	"github.com/myelin-chat/myelin/storage"
)

type zonesFunc func(string) string

func (f zonesFunc) ServerZone(s string) string { return f(s) }

// TestFlowMetricsByZone: myelin_audit_flows_total counts flows by the other
// server's zone, as Options.Zones places it.
func TestFlowMetricsByZone(t *testing.T) {
	db, err := storage.Open(context.Background(), pgtest.StoreURL(t, "sqlite"), 2)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	reg := prometheus.NewRegistry()
	l, err := audit.New(audit.Options{Store: db, Metrics: reg, Zones: zonesFunc(func(s string) string {
		if s == "eu.example" {
			return "eu"
		}
		return "none"
	})})
	if err != nil {
		t.Fatal(err)
	}
	l.Flow("hs", audit.Flow{Direction: audit.Outbound, Server: "eu.example", TxnID: "t1", PDUs: 1})
	l.Flow("eu.example", audit.Flow{Direction: audit.Inbound, Server: "eu.example", TxnID: "t2", EDUs: map[string]int{"m.typing": 1}})
	l.Flow("hs", audit.Flow{Direction: audit.Outbound, Server: "far.example", TxnID: "t3", PDUs: 1})
	l.Close()
	want := `
# HELP myelin_audit_flows_total x
# TYPE myelin_audit_flows_total counter
myelin_audit_flows_total{direction="inbound",kind="typing",zone="eu"} 1
myelin_audit_flows_total{direction="outbound",kind="events",zone="eu"} 1
myelin_audit_flows_total{direction="outbound",kind="events",zone="none"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(want, "x\n", helpOf(t, reg)+"\n", 1)), "myelin_audit_flows_total"); err != nil {
		t.Fatal(err)
	}
}

func helpOf(t *testing.T, reg *prometheus.Registry) string {
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "myelin_audit_flows_total" {
			return mf.GetHelp()
		}
	}
	t.Fatal("myelin_audit_flows_total not registered")
	return ""
}
