package tests

import (
	"context"
	"testing"

	"github.com/myelin-chat/myelin/accounts"
	"github.com/myelin-chat/myelin/homeserver/testserver"
)

// BenchmarkAuthenticatedRequest measures an authenticated round trip
// (token lookup, last-seen throttle, handler) over loopback HTTP.
func BenchmarkAuthenticatedRequest(b *testing.B) {
	for _, backend := range testserver.Backends {
		b.Run(backend, func(b *testing.B) {
			srv := testserver.Start(b, backend)
			c := srv.Register(b, "bench")
			ctx := context.Background()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Whoami(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPasswordHash is the cost of one argon2id hash (and so of a login).
func BenchmarkPasswordHash(b *testing.B) {
	for b.Loop() {
		accounts.HashPassword("correct horse battery staple")
	}
}
