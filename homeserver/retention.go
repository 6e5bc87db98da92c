package homeserver

import "github.com/myelin-chat/myelin/retention"

// buildRetention builds the retention purge (it runs only when
// retention.enabled): over the store, deleting purged media through the
// content repository.
func (s *Server) buildRetention() {
	s.Retention = retention.New(retention.Options{Store: s.DB, Media: s.Media, Config: s.Config.Retention})
}
