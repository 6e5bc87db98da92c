package syncv2

import "testing"

func TestTokenRoundTrip(t *testing.T) {
	for _, tok := range []Token{{}, {Pos: 1, Typing: 2, ToDevice: 1}, {Pos: 1 << 40, Typing: 1732700000000, ToDevice: 17}} {
		got, err := ParseToken(tok.String())
		if err != nil || got != tok {
			t.Fatalf("ParseToken(%q) = %+v, %v; want %+v", tok.String(), got, err, tok)
		}
	}
}

func TestParseTokenRejectsGarbage(t *testing.T) {
	for _, s := range []string{"", "s", "s1", "s1_2", "x1_2_3", "s-1_2_0", "s1_2_3_4", "s1_a_0", "s1_2_5", "s01_2_0", "s1__0", "s99999999999999999999_1_1",
		// found by FuzzParseToken: second spellings of a token
		"s+0_0_0", "s1_+2_0", "s-0_0_0", "s1_2_-0"} {
		if _, err := ParseToken(s); err == nil {
			t.Errorf("ParseToken(%q) accepted", s)
		}
	}
}
