package clients

import (
	"context"
	"sync"
	"testing"

	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// TestStaleFillAfterInvalidate pins down the race the cache generation guards
// against: a lookup reads the old row, a local write commits and invalidates, and
// only then does the lookup fill the cache. The stale row must not be cached.
func TestStaleFillAfterInvalidate(t *testing.T) {
	for _, d := range dbtest.Backends() {
		t.Run(string(d), func(t *testing.T) {
			ctx := context.Background()
			s, err := NewStore(dbtest.Open(t, d), &SecretHasher{Key: make([]byte, 32)}, StoreOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Create(ctx, &Client{ID: "c", Name: "old", Type: TypeAgent}); err != nil {
				t.Fatal(err)
			}
			loaded, proceed := make(chan struct{}), make(chan struct{})
			var once sync.Once
			s.testHookLoaded = func(string) {
				once.Do(func() {
					close(loaded)
					<-proceed
				})
			}
			done := make(chan *Client)
			go func() {
				c, _ := s.Get(ctx, "c") // reads "old", then waits in the hook
				done <- c
			}()
			<-loaded
			name := "new"
			if _, err := s.Update(ctx, "c", Patch{Name: &name}); err != nil {
				t.Fatal(err)
			}
			close(proceed)
			if c := <-done; c == nil || c.Name != "old" {
				t.Fatalf("the racing lookup: got %+v, want the old row it read", c)
			}
			s.testHookLoaded = nil
			if c, err := s.Get(ctx, "c"); err != nil || c.Name != "new" {
				t.Fatalf("Get after the write: got %q, %v; want new (a stale fill was cached)", c.Name, err)
			}
		})
	}
}
