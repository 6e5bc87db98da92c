package userdirectory

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/myelin-chat/myelin/storage"
)

type fakeStore []string

func (f fakeStore) SearchUserDirectory(_ context.Context, _, _ string, limit int) ([]storage.DirectoryUser, bool, error) {
	var out []storage.DirectoryUser
	for _, u := range f {
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, storage.DirectoryUser{UserID: u})
	}
	return out, false, nil
}

type hideServer string

func (h hideServer) Listed(userID string) bool { return !strings.HasSuffix(userID, ":"+string(h)) }

// The scope leaves users out and the page is filled from the rows after
// them; limited says whether more listed users matched.
func TestSearchScope(t *testing.T) {
	store := fakeStore{"@a:hidden", "@b:ok", "@c:hidden", "@d:ok", "@e:ok"}
	ids := func(us []User) []string {
		var out []string
		for _, u := range us {
			out = append(out, u.UserID)
		}
		return out
	}
	s := New(Options{Store: store, Scope: hideServer("hidden")})
	got, limited, err := s.Search(context.Background(), "@me:ok", "", 2)
	if err != nil || !limited || !slices.Equal(ids(got), []string{"@b:ok", "@d:ok"}) {
		t.Fatalf("limit 2: %v limited %v, %v", ids(got), limited, err)
	}
	got, limited, _ = s.Search(context.Background(), "@me:ok", "", 3)
	if limited || !slices.Equal(ids(got), []string{"@b:ok", "@d:ok", "@e:ok"}) {
		t.Fatalf("limit 3: %v limited %v", ids(got), limited)
	}
	got, _, _ = New(Options{Store: store}).Search(context.Background(), "@me:ok", "", 10)
	if len(got) != 5 {
		t.Fatalf("unscoped: %v", ids(got))
	}
}
