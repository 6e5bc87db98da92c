package push

import (
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

type fakeRoom struct{ members int }

func (r fakeRoom) GetOwnDisplayname() string { return "Alice" }
func (r fakeRoom) GetMemberCount() int       { return r.members }
func (r fakeRoom) GetPowerLevels() *event.PowerLevelsEventContent {
	return &event.PowerLevelsEventContent{Users: map[id.UserID]int{"@bob:x": 50}} // the sender may notify the room
}

func evt(t *testing.T, typ, content string) *event.Event {
	t.Helper()
	var ev event.Event
	if err := json.Unmarshal([]byte(`{"type":"`+typ+`","sender":"@bob:x","room_id":"!r:x","event_id":"$e","content":`+content+`}`), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Content.Raw == nil {
		_ = json.Unmarshal(ev.Content.VeryRaw, &ev.Content.Raw)
	}
	return &ev
}

func TestDefaultRulesEvaluate(t *testing.T) {
	st, _ := parseStored("")
	rs := st.effective("@alice:x").Ruleset()
	cases := []struct {
		name            string
		typ, content    string
		members         int
		notify, highlit bool
	}{
		{"message in group", "m.room.message", `{"msgtype":"m.text","body":"hi"}`, 5, true, false},
		{"message one-to-one", "m.room.message", `{"msgtype":"m.text","body":"hi"}`, 2, true, false},
		{"notice", "m.room.message", `{"msgtype":"m.notice","body":"hi"}`, 5, false, false},
		{"mention", "m.room.message", `{"msgtype":"m.text","body":"hi","m.mentions":{"user_ids":["@alice:x"]}}`, 5, true, true},
		{"reaction", "m.reaction", `{}`, 5, false, false},
		{"edit", "m.room.message", `{"msgtype":"m.text","body":"*","m.relates_to":{"rel_type":"m.replace","event_id":"$x"}}`, 5, false, false},
		{"encrypted", "m.room.encrypted", `{}`, 5, true, false},
		{"custom", "org.example", `{}`, 5, false, false},
		// The legacy body-mention rules, for clients that do not send m.mentions.
		{"display name in body", "m.room.message", `{"msgtype":"m.text","body":"hi Alice!"}`, 5, true, true},
		{"localpart in body", "m.room.message", `{"msgtype":"m.text","body":"hello @alice:x!"}`, 5, true, true},
		{"localpart inside a word", "m.room.message", `{"msgtype":"m.text","body":"malice"}`, 5, true, false},
		{"@room in body", "m.room.message", `{"msgtype":"m.text","body":"@room look"}`, 5, true, true},
		{"body mentions but m.mentions present", "m.room.message", `{"msgtype":"m.text","body":"hi Alice @room","m.mentions":{}}`, 5, true, false},
	}
	for _, c := range cases {
		s := rs.GetActions(fakeRoom{c.members}, evt(t, c.typ, c.content)).Should()
		if s.Notify != c.notify || s.Highlight != c.highlit {
			t.Errorf("%s: notify=%v highlight=%v", c.name, s.Notify, s.Highlight)
		}
	}
}

func TestUserRulesPrecedeDefaultsButNotMaster(t *testing.T) {
	st, _ := parseStored(`{"user":{"override":[{"rule_id":"mine","enabled":true,"conditions":[],"actions":[]}]},"defaults":{".m.rule.master":{"enabled":true}}}`)
	rules := st.effective("@alice:x")
	ov := rules["override"]
	if ov[0].RuleID != ".m.rule.master" || !ov[0].Enabled || ov[1].RuleID != "mine" || ov[2].RuleID != ".m.rule.suppress_notices" {
		t.Fatalf("override order: %s %s %s", ov[0].RuleID, ov[1].RuleID, ov[2].RuleID)
	}
	if !ov[0].Default || ov[1].Default {
		t.Fatal("default flags wrong")
	}
}
