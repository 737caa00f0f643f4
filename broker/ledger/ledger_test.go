package ledger_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/broker/ledger"
	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

func TestLedger(t *testing.T) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			ctx := context.Background()
			d := dbtest.Open(t, dialect)
			now := time.Unix(1_800_000_000, 0)
			clock := func() time.Time { return now }
			l1, err := ledger.Open(ctx, d, ledger.Options{Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer l1.Close()
			l2, err := ledger.Open(ctx, d, ledger.Options{Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			defer l2.Close()

			if _, revoked := l1.Revoked("t1", "g1", []string{"a1"}); revoked {
				t.Fatal("revoked before any revocation")
			}
			if err := l1.Revoke(ctx, ledger.KindToken, "a1", "test", now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if reason, revoked := l1.Revoked("t1", "g1", []string{"root", "a1"}); !revoked || reason == "" {
				t.Fatalf("descendant of a revoked token: got %v %q, want revoked", revoked, reason)
			}
			// Another node sees it after Sync, not before.
			if _, revoked := l2.Revoked("a1", "", nil); revoked {
				t.Fatal("node 2 saw the revocation without syncing")
			}
			if err := l2.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if _, revoked := l2.Revoked("a1", "", nil); !revoked {
				t.Fatal("node 2 did not see the revocation after Sync")
			}
			if err := l2.Revoke(ctx, ledger.KindGrant, "g1", "user", now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			if err := l1.Sync(ctx); err != nil {
				t.Fatal(err)
			}
			if !l1.GrantRevoked("g1") {
				t.Fatal("grant revocation did not reach node 1")
			}
			// Revoking twice is fine.
			if err := l1.Revoke(ctx, ledger.KindToken, "a1", "again", now.Add(2*time.Hour)); err != nil {
				t.Fatalf("second revoke: %v", err)
			}
			if err := l1.Revoke(ctx, "bogus", "x", "", now); err == nil {
				t.Fatal("unknown kind accepted")
			}

			// The feed: a snapshot, then only what is new, then a long poll that wakes on a change.
			entries, cur, reset := l1.Changes(ctx, "", 0)
			if !reset || len(entries) != 2 {
				t.Fatalf("snapshot: got %v reset=%v, want 2 entries and reset", entries, reset)
			}
			entries, cur2, reset := l1.Changes(ctx, cur, 0)
			if reset || len(entries) != 0 || cur2 != cur {
				t.Fatalf("no change: got %v %q reset=%v", entries, cur2, reset)
			}
			done := make(chan []ledger.Entry)
			go func() {
				e, _, _ := l1.Changes(ctx, cur, 10*time.Second)
				done <- e
			}()
			if err := l1.Revoke(ctx, ledger.KindToken, "t9", "", now.Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			select {
			case e := <-done:
				if len(e) != 1 || e[0].ID != "t9" {
					t.Fatalf("long poll: got %v, want t9", e)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("long poll did not wake")
			}
			if _, _, reset := l1.Changes(ctx, "foreign.3", 0); !reset {
				t.Fatal("a foreign cursor must reset")
			}

			// Issued-token records are written in the background.
			l1.Record(ledger.TokenRecord{JTI: "j1", ClientID: "c", Subject: "alice", SubjectIssuer: "iss", Ancestors: []string{"p"}, IssuedAt: now, ExpiresAt: now.Add(time.Minute)})
			fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := l1.Flush(fctx); err != nil {
				t.Fatal(err)
			}
			rec, err := l1.Issued(ctx, "j1")
			if err != nil || rec.Subject != "alice" || len(rec.Ancestors) != 1 {
				t.Fatalf("issued record: got %+v, %v", rec, err)
			}

			// A burst larger than one INSERT chunk is written whole.
			for i := 0; i < 300; i++ {
				l1.Record(ledger.TokenRecord{JTI: fmt.Sprintf("burst-%d", i), ClientID: "c", Subject: "s", IssuedAt: now, ExpiresAt: now.Add(time.Minute)})
			}
			if err := l1.Flush(fctx); err != nil {
				t.Fatal(err)
			}
			var n int
			if err := d.QueryRow(ctx, `SELECT COUNT(*) FROM issued_tokens WHERE jti LIKE 'burst-%'`).Scan(&n); err != nil || n != 300 {
				t.Fatalf("burst: got %d rows, %v; want 300", n, err)
			}

			// Expired revocations are pruned.
			now = now.Add(3 * time.Hour)
			if _, err := l1.Prune(ctx); err != nil {
				t.Fatal(err)
			}
			if n, g := l1.Size(); n != 0 || g != 0 {
				t.Fatalf("after prune: %d tokens, %d grants in force", n, g)
			}
		})
	}
}
