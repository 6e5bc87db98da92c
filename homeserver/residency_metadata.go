package homeserver

import (
	"strings"

	"github.com/myelin-chat/myelin/residency"
	"github.com/myelin-chat/myelin/userdirectory"
)

// directoryScope is the user directory's scope under the residency policy
// (nil when no zone hides its users): remote users of a zone with
// user_directory_visible false are not listed.
func (s *Server) directoryScope() userdirectory.Scope {
	r := s.Config.Residency
	if !r.Enabled {
		return nil
	}
	for _, z := range r.Zones {
		if !z.DirectoryVisible() {
			return residencyDirectory{s.Residency}
		}
	}
	return nil
}

type residencyDirectory struct{ p *residency.Policy }

func (d residencyDirectory) Listed(userID string) bool {
	_, server, ok := strings.Cut(userID, ":")
	if !ok {
		return false
	}
	rules := d.p.Rules()
	zoneName, source := rules.ServerZone(server)
	if source == "our server" || zoneName == "" {
		return true // ours; a server in no zone never shares a room with us
	}
	zone, ok := rules.Zone(zoneName)
	return !ok || zone.DirectoryVisible()
}
