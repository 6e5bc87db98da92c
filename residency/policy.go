package residency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/myelin-chat/myelin/internal/config"
	"github.com/myelin-chat/myelin/internal/serverpattern"
	"github.com/myelin-chat/myelin/storage"
)

// Store is what the policy reads and records about rooms (*storage.DB).
type Store interface {
	GetRoomResidency(ctx context.Context, roomID string) (storage.RoomResidency, error)
	PinRoomResidency(ctx context.Context, r storage.RoomResidency) (storage.RoomResidency, error)
	GetRoomFacts(ctx context.Context, roomID string) (storage.RoomFacts, error)
	RoomEncrypted(ctx context.Context, roomID string) (bool, error)
}

// Options build a Policy.
type Options struct {
	Config  *config.Config
	Store   Store
	Metrics prometheus.Registerer // nil: unregistered
	Now     func() time.Time      // nil: time.Now
}

// Policy answers the boundary modules' questions: may this server have
// this kind of data, of this room or at all. It holds the compiled Rules
// (swapped whole when the trust list changes, so a question sees one
// version) and caches each room's zone, which never changes once decided.
type Policy struct {
	o     Options
	rules atomic.Pointer[Rules]
	// rooms caches room ID → zone (bounded like Rules' placements).
	rooms     sync.Map
	roomsSize atomic.Int64
	changeMu  sync.Mutex // serializes SetTrustList
	decisions *prometheus.CounterVec
}

// New builds the policy from the config, with no trust list yet.
func New(o Options) *Policy {
	if o.Now == nil {
		o.Now = time.Now
	}
	p := &Policy{o: o, decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "myelin_residency_decisions_total",
		Help: "Data-localization policy decisions, by the other server's zone (none: in no zone), data kind and result.",
	}, []string{"zone", "kind", "result"})}
	if o.Metrics != nil {
		o.Metrics.MustRegister(p.decisions)
	}
	r, _ := Compile(o.Config, nil)
	p.rules.Store(r)
	return p
}

// Enabled reports whether the policy is on; when off every question is
// answered allowed and nothing is recorded.
func (p *Policy) Enabled() bool { return p.Rules().Enabled() }

// Rules is the compiled policy in force.
func (p *Policy) Rules() *Rules { return p.rules.Load() }

// SetTrustList puts tl in force (nil: none) and returns the rules before
// and after, and the entries ignored because they name a zone not defined
// here. Questions already being answered finish on the old rules.
func (p *Policy) SetTrustList(tl *TrustList) (before, after *Rules, ignored []string) {
	p.changeMu.Lock()
	defer p.changeMu.Unlock()
	after, ignored = Compile(p.o.Config, tl)
	before = p.rules.Swap(after)
	return before, after, ignored
}

// ErrUnknownRoom is returned by RoomZone for a room the server holds
// nothing of: there is nothing to classify it by.
var ErrUnknownRoom = errors.New("residency: room unknown here")

// RoomZone is the zone a room is resident in: the recorded one, or else
// (a room from before the policy, or first met without a decision) its
// classification by the rules from the store's copy of its state, which
// is then recorded. A room created here by our own user whose m.room.create
// pins a zone keeps that zone.
func (p *Policy) RoomZone(ctx context.Context, roomID string) (Classification, error) {
	if c, ok := p.rooms.Load(roomID); ok {
		return c.(Classification), nil
	}
	rec, err := p.o.Store.GetRoomResidency(ctx, roomID)
	if err == nil {
		c := Classification{Zone: rec.Zone, Rule: rec.Rule, Reason: "recorded " + rec.Source}
		p.cacheRoom(roomID, c)
		return c, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return Classification{}, fmt.Errorf("reading the zone of %s: %w", roomID, err)
	}
	facts, err := p.o.Store.GetRoomFacts(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return Classification{}, ErrUnknownRoom
	}
	if err != nil {
		return Classification{}, err
	}
	rules := p.Rules()
	var c Classification
	if _, known := rules.Zone(facts.Residency); known && serverOf(facts.Creator) == rules.ourServer {
		c = Classification{Zone: facts.Residency, Rule: "m.room.create", Reason: "pinned in m.room.create at creation"}
	} else if c, err = rules.Classify(RoomFacts{Creator: facts.Creator, RoomType: facts.RoomType, Aliases: facts.Aliases}); err != nil {
		return Classification{}, err
	}
	return p.Pin(ctx, roomID, c, "classified")
}

// Pin records c as the room's zone unless one is recorded already, and
// returns the recorded one. source is "created" or "classified".
func (p *Policy) Pin(ctx context.Context, roomID string, c Classification, source string) (Classification, error) {
	rec, err := p.o.Store.PinRoomResidency(ctx, storage.RoomResidency{RoomID: roomID, Zone: c.Zone, Rule: c.Rule,
		Source: source, DecidedTS: p.o.Now().UnixMilli()})
	if err != nil {
		return Classification{}, err
	}
	if rec.Zone != c.Zone || rec.Rule != c.Rule {
		c = Classification{Zone: rec.Zone, Rule: rec.Rule, Reason: "recorded " + rec.Source}
	}
	p.cacheRoom(roomID, c)
	return c, nil
}

func (p *Policy) cacheRoom(roomID string, c Classification) {
	if p.roomsSize.Load() >= maxPlacedCache {
		return
	}
	if _, loaded := p.rooms.LoadOrStore(roomID, c); !loaded {
		p.roomsSize.Add(1)
	}
}

// Server decides whether kind may be exchanged with server, whatever the
// room (profiles, keys, presence, to-device, directory queries).
func (p *Policy) Server(_ context.Context, server string, kind Kind) Decision {
	r := p.Rules()
	if !r.Enabled() {
		return Decision{Allowed: true, Rule: RuleDisabled}
	}
	return p.count(r.Shares(server, kind), kind)
}

// Room decides whether server may have kind of roomID's data: be sent its
// events or EDUs, read its state or history, join or be invited. A room
// the server knows nothing of is refused unless the server is ours; an
// error reading the store refuses too (the policy fails closed).
func (p *Policy) Room(ctx context.Context, roomID, server string, kind Kind) Decision {
	r := p.Rules()
	if !r.Enabled() {
		return Decision{Allowed: true, Rule: RuleDisabled}
	}
	c, err := p.RoomZone(ctx, roomID)
	if err != nil {
		if zn, _ := r.ServerZone(server); zn == r.ourZone && serverpattern.Host(server) == r.ourServer {
			return Decision{Allowed: true, Rule: RuleOurServer, ServerZone: zn}
		}
		if !errors.Is(err, ErrUnknownRoom) {
			slog.ErrorContext(ctx, "residency: cannot tell a room's zone; refusing", "room_id", roomID, "err", err)
		}
		return p.count(Decision{Rule: "residency.unknown_room",
			Reason: fmt.Sprintf("this server cannot tell which zone room %s is resident in", roomID)}, kind)
	}
	return p.count(r.Admits(c.Zone, server, kind), kind)
}

// Join decides whether server may join roomID (or be invited to it, or
// knock): Room for events, and when the room's zone requires encryption,
// the room must be encrypted first.
func (p *Policy) Join(ctx context.Context, roomID, server string) Decision {
	d := p.Room(ctx, roomID, server, Events)
	if !d.Allowed || d.Rule == RuleDisabled || d.Rule == RuleOurServer {
		return d
	}
	if p.Rules().RequiresEncryption(d.RoomZone) {
		enc, err := p.o.Store.RoomEncrypted(ctx, roomID)
		if err != nil || !enc {
			d.Allowed, d.Rule = false, RuleRequireEncryption(d.RoomZone)
			d.Reason = fmt.Sprintf("rooms resident in zone %s must be encrypted before another server may join; enable encryption in the room first",
				d.RoomZone)
		}
	}
	return d
}

// count records a decision in myelin_residency_decisions_total.
func (p *Policy) count(d Decision, kind Kind) Decision {
	zone := d.ServerZone
	if zone == "" {
		zone = "none"
	}
	result := "allowed"
	if !d.Allowed {
		result = "refused"
	}
	p.decisions.WithLabelValues(zone, string(kind), result).Inc()
	return d
}

func serverOf(userID string) string {
	if _, server, ok := strings.Cut(userID, ":"); ok {
		return serverpattern.Host(server)
	}
	return ""
}

// Listed decides whether server may deal with us at all: with the policy on,
// a server in no zone may not (its requests are refused at authentication,
// and nothing is sent to it). Which data it may then have is Server's and
// Room's question.
func (p *Policy) Listed(_ context.Context, server string) Decision {
	r := p.Rules()
	if !r.Enabled() {
		return Decision{Allowed: true, Rule: RuleDisabled}
	}
	zn, src := r.ServerZone(server)
	if zn == "" {
		return Decision{Rule: RuleUnlistedServer, Reason: fmt.Sprintf(
			"%s is in no zone of this server's data-localization policy", serverpattern.Host(server))}
	}
	return Decision{Allowed: true, Rule: "residency.zones." + zn, ServerZone: zn, ZoneSource: src}
}
