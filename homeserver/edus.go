package homeserver

import (
	"context"

	"github.com/myelin-chat/myelin/ephemeral"
	"github.com/myelin-chat/myelin/federation"
	"github.com/myelin-chat/myelin/federationsender"
	"github.com/myelin-chat/myelin/ingest"
	"github.com/myelin-chat/myelin/internal/follower"
)

// buildEDUQueue builds the outbound EDU queue (s.EDUQueue) right after the
// transport, before the modules that queue to it, when federation is on;
// the Sender (startFollowers) sends what it holds.
func (s *Server) buildEDUQueue(t *federation.Transport) error {
	if !s.Config.FederationEnabled() {
		return nil
	}
	q, err := federationsender.NewQueue(federationsender.QueueOptions{ServerName: s.Config.ServerName, Store: s.DB,
		Policy: t.Policy, Metrics: s.Metrics, Audit: s.Audit, Residency: s.senderResidency()})
	if err != nil {
		return err
	}
	s.EDUQueue = q
	return nil
}

// eduSender is s.EDUQueue as a module's EDUSender interface T
// (keyserver.EDUSender, ephemeral.EDUSender): a nil interface, not a typed
// nil, when federation is off.
func eduSender[T any](s *Server) (sender T) {
	if s.EDUQueue != nil {
		sender = any(s.EDUQueue).(T)
	}
	return sender
}

// eduHandlers maps each inbound EDU type to the module method taking it
// (ingest.Options.EDUs); ingest is built after those modules.
func eduHandlers(s *Server) map[string]ingest.EDUHandler {
	return map[string]ingest.EDUHandler{
		"m.direct_to_device":   s.Keys.ReceiveToDeviceEDU,
		"m.device_list_update": s.Keys.ReceiveDeviceListUpdate,
		"m.signing_key_update": s.Keys.ReceiveSigningKeyUpdate,
		"m.typing":             s.Ephemeral.ReceiveTyping,
		"m.receipt":            s.Ephemeral.ReceiveReceipt,
		"m.presence":           s.Ephemeral.ReceivePresence,
	}
}

// startPresenceFollower starts the follower that tells a server starting to
// share a room with our users their presence (ephemeral.PresenceOnJoin);
// none with presence off.
func (s *Server) startPresenceFollower(ctx context.Context) error {
	if !s.Config.Presence.Enabled {
		return nil
	}
	f, err := follower.Start(ctx, follower.Options{Name: ephemeral.PresenceJoinFollower, Store: s.DB, Stream: s.DB.Stream,
		Handle: s.Ephemeral.PresenceOnJoin})
	if err != nil {
		return err
	}
	s.Followers = append(s.Followers, f)
	return nil
}
