package homeserver

import (
	"context"

	"github.com/myelin-chat/myelin/internal/follower"
	"github.com/myelin-chat/myelin/push"
)

// buildPushDelivery starts the delivery of the push queue to push gateways
// (config push.delivery; gateways on public addresses only unless
// push.allow_private_gateways).
func (s *Server) buildPushDelivery() (*push.Delivery, error) {
	pd := s.Config.Push.Delivery
	return push.NewDelivery(push.DeliveryOptions{Store: s.DB, AllowPrivate: s.Config.Push.AllowPrivateGateways,
		Workers: pd.Workers, PerGateway: pd.PerGateway, RequestTimeout: pd.RequestTimeout.Duration,
		MinBackoff: pd.MinBackoff.Duration, MaxBackoff: pd.MaxBackoff.Duration, MaxRetryAge: pd.MaxRetryAge.Duration,
		Metrics: s.Metrics})
}

// startPushFollower queues the notifications new events give rise to, from
// the push_delivery follower's cursor (outside the room writer).
func (s *Server) startPushFollower(ctx context.Context) error {
	f, err := follower.Start(ctx, follower.Options{Name: push.DeliveryFollower, Store: s.DB, Stream: s.DB.Stream,
		Handle: s.Push.QueuePushes})
	if err != nil {
		return err
	}
	s.Followers = append(s.Followers, f)
	return nil
}

// closePush stops badge updates, then delivery (after the followers, so
// nothing queues to it any more; what is queued stays in the store).
func (s *Server) closePush() {
	if s.Push != nil {
		s.Push.Close()
	}
	if s.PushDelivery != nil {
		s.PushDelivery.Close()
	}
}
