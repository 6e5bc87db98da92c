// Package tests holds end-to-end tests: real servers on loopback driven by
// real client libraries, on every storage backend.
package tests

import (
	"testing"

	"github.com/myelin-chat/myelin/homeserver/testserver"
)

func TestMain(m *testing.M) { testserver.Main(m) }
