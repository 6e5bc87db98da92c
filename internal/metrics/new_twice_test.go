package metrics

import "testing"

// TestNewTwice: several servers in one process each register the
// process-wide panic counter with their own registry.
func TestNewTwice(t *testing.T) {
	a, b := New(), New()
	PanicsRecovered.WithLabelValues("test").Inc()
	for _, r := range []*Registry{a, b} {
		families, err := r.Gather()
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range families {
			found = found || f.GetName() == "myelin_panics_recovered_total"
		}
		if !found {
			t.Fatal("panic counter not exported")
		}
	}
}
