package edge

import (
	"testing"
	"time"
)

func TestRevocationSet(t *testing.T) {
	now := testStart
	s := NewRevocationSet()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(s.Add(KindToken, "short", now.Add(-10*time.Minute)))
	must(s.Add(KindToken, "recent", now.Add(-time.Minute)))
	must(s.Add(KindGrant, "forever", time.Time{}))
	must(s.Add(KindGrant, "extended", now.Add(-time.Hour)))
	must(s.Add(KindGrant, "extended", now.Add(time.Hour))) // the later expiry wins
	must(s.Add(KindToken, "pinned", time.Time{}))
	must(s.Add(KindToken, "pinned", now.Add(-time.Hour))) // never pruned stays never pruned
	if err := s.Add("client", "x", now); err == nil {
		t.Errorf("Add of an unknown kind: got nil, want an error")
	}
	if err := s.Add(KindToken, "", now); err == nil {
		t.Errorf("Add of an empty id: got nil, want an error")
	}

	if got, want := s.Prune(now), 1; got != want {
		t.Errorf("Prune: got %d dropped, want %d", got, want)
	}
	for _, tc := range []struct {
		kind RevocationKind
		id   string
		want bool
	}{
		{KindToken, "short", false},  // expired beyond the leeway grace
		{KindToken, "recent", true},  // expired within the leeway grace
		{KindGrant, "forever", true}, // no expiry
		{KindGrant, "extended", true},
		{KindToken, "pinned", true},
		{KindToken, "forever", false}, // kinds are separate
	} {
		if got := s.Revoked(tc.kind, tc.id); got != tc.want {
			t.Errorf("Revoked(%s, %s): got %v, want %v", tc.kind, tc.id, got, tc.want)
		}
	}

	must(s.Replace([]RevocationEntry{{Kind: KindGrant, ID: "g"}}))
	if got, want := s.Len(), 1; got != want {
		t.Errorf("Len after Replace: got %d, want %d", got, want)
	}
	if err := s.Replace([]RevocationEntry{{Kind: "bogus", ID: "g"}}); err == nil {
		t.Errorf("Replace with an unknown kind: got nil, want an error")
	}
	if !s.Revoked(KindGrant, "g") {
		t.Errorf("a failed Replace changed the set")
	}
}
