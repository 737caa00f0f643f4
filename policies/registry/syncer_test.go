package registry_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mandate-dev/mandate/internal/db"
	"github.com/mandate-dev/mandate/policies"
	"github.com/mandate-dev/mandate/policies/registry"
)

// node is one broker node: its own registry (and cache), engine and syncer,
// over the shared database.
type node struct {
	reg  *registry.Registry
	eng  *policies.Engine
	sync *registry.Syncer
}

func newNode(d *db.DB) *node {
	n := &node{reg: newRegistry(d), eng: policies.NewEngine(policies.EngineConfig{})}
	n.sync = registry.NewSyncer(n.reg, n.eng, registry.SyncerOptions{RetryInterval: 10 * time.Millisecond})
	return n
}

func compiled(t *testing.T, version string, files map[string]string) *policies.Bundle {
	t.Helper()
	b, err := policies.Compile(context.Background(), version, files)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSyncerBootstrapAndPoll(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		a, b := newNode(d), newNode(d)

		// The first node records its start-up bundle as the first activation.
		def, err := policies.DefaultBundle(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.sync.Start(ctx, def); err != nil {
			t.Fatal(err)
		}
		act, err := a.reg.Active(ctx)
		if err != nil || act.Version != policies.DefaultVersion || act.Action != registry.ActionBootstrap || act.ActivatedBy != registry.SystemActor {
			t.Fatalf("first activation = %+v, %v", act, err)
		}
		if rec, err := a.reg.Get(ctx, policies.DefaultVersion); err != nil || rec.SHA256 != def.Digest || !rec.Tests.OK() {
			t.Fatalf("stored default = %+v, %v", rec, err)
		}
		// The second starts with another bundle, and runs the recorded one.
		if err := b.sync.Start(ctx, compiled(t, "dir:local", bundleFiles("local"))); err != nil {
			t.Fatal(err)
		}
		if got := b.eng.Active().Version; got != policies.DefaultVersion {
			t.Fatalf("node b runs %s, want the recorded %s", got, policies.DefaultVersion)
		}
		if acts, _ := a.reg.Activations(ctx, 0); len(acts) != 1 {
			t.Fatalf("%d activations after two starts, want 1", len(acts))
		}

		// Nothing new: Poll is a no-op.
		if changed, err := b.sync.Poll(ctx); changed || err != nil {
			t.Fatalf("poll = %v, %v; want no change", changed, err)
		}

		// Node a activates; a runs it at once, b after its next Poll.
		mustPush(t, a.reg, bundleFiles("next"), "next")
		if _, err := a.reg.Activate(ctx, "next", "alice"); err != nil {
			t.Fatal(err)
		}
		if got := a.eng.Active().Version; got != "next" {
			t.Fatalf("node a runs %s after activating next", got)
		}
		if got := b.eng.Active().Version; got != policies.DefaultVersion {
			t.Fatalf("node b runs %s before polling", got)
		}
		changed, err := b.sync.Poll(ctx)
		if !changed || err != nil {
			t.Fatalf("poll = %v, %v; want a change", changed, err)
		}
		if got := b.eng.Active().Version; got != "next" || b.sync.Version() != "next" || b.sync.Seq() != a.sync.Seq() {
			t.Fatalf("node b runs %s (syncer %s/%d, a at %d), want next", got, b.sync.Version(), b.sync.Seq(), a.sync.Seq())
		}
		// The swapped-in bundle decides.
		dec, err := b.eng.Decide(ctx, &policies.Input{Version: policies.InputVersion, Client: policies.ClientInput{ID: "agent"}, Meta: policies.MetaInput{Unix: testNow.Unix()}})
		if err != nil || !dec.Allow || dec.BundleVersion != "next" {
			t.Fatalf("decision = %+v, %v", dec, err)
		}

		// Node b rolls back; a follows.
		if _, err := b.reg.Rollback(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if got := b.eng.Active().Version; got != policies.DefaultVersion {
			t.Fatalf("node b runs %s after its rollback", got)
		}
		if changed, err := a.sync.Poll(ctx); !changed || err != nil {
			t.Fatalf("poll = %v, %v", changed, err)
		}
		if got := a.eng.Active().Version; got != policies.DefaultVersion {
			t.Fatalf("node a runs %s after b's rollback", got)
		}
	})
}

// TestSyncerConcurrentStart: nodes starting together on an empty database
// record one first activation and agree on it.
func TestSyncerConcurrentStart(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		nodes := make([]*node, 4)
		errs := make([]error, len(nodes))
		var wg sync.WaitGroup
		for i := range nodes {
			nodes[i] = newNode(d)
			b := compiled(t, "dir:policies", bundleFiles("same"))
			wg.Go(func() { errs[i] = nodes[i].sync.Start(ctx, b) })
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		acts, err := nodes[0].reg.Activations(ctx, 0)
		if err != nil || len(acts) != 1 {
			t.Fatalf("activations = %+v, %v; want 1", acts, err)
		}
		for i, n := range nodes {
			if got := n.eng.Active().Version; got != "dir:policies" {
				t.Errorf("node %d runs %s", i, got)
			}
		}
	})
}

// TestSyncerStartConflict: a start-up bundle whose version names different
// stored files is refused rather than silently replaced.
func TestSyncerStartConflict(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		n := newNode(d)
		mustPush(t, n.reg, bundleFiles("stored"), "dir:policies")
		err := n.sync.Start(ctx, compiled(t, "dir:policies", bundleFiles("different")))
		if !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("start = %v, want ErrConflict", err)
		}
		if n.eng.Active() != nil {
			t.Error("the engine was given a bundle")
		}
	})
}

// TestSyncerSkipsUnloadableActivation: an activation this node cannot
// compile is reported once and leaves the engine as it was.
func TestSyncerSkipsUnloadableActivation(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		n := newNode(d)
		if err := n.sync.Start(ctx, compiled(t, "good", bundleFiles("good"))); err != nil {
			t.Fatal(err)
		}
		// A row no Push would write: another engine version's bundle, say.
		if _, err := d.Exec(ctx, `INSERT INTO policy_bundles (version, files, author, created_at, test_report, sha256)
			VALUES ('broken', '{"p.rego": "package mandate.exchange\n\ndecision := {"}', 'x', 0, '{}', 'x')`); err != nil {
			t.Fatal(err)
		}
		if _, err := d.Exec(ctx, `INSERT INTO policy_activations (version, activated_by, at) VALUES ('broken', 'x', 0)`); err != nil {
			t.Fatal(err)
		}
		if changed, err := n.sync.Poll(ctx); changed || err == nil {
			t.Fatalf("poll = %v, %v; want an error", changed, err)
		}
		if changed, err := n.sync.Poll(ctx); changed || err != nil {
			t.Fatalf("second poll = %v, %v; want a quiet skip", changed, err)
		}
		if got := n.eng.Active().Version; got != "good" {
			t.Fatalf("engine runs %s, want good", got)
		}
	})
}

// TestSyncerListen: on PostgreSQL an activation reaches another node
// through NOTIFY, without that node polling.
func TestSyncerListen(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		a, b := newNode(d), newNode(d)
		if err := a.sync.Start(ctx, compiled(t, "first", bundleFiles("first"))); err != nil {
			t.Fatal(err)
		}
		if err := b.sync.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- b.sync.Listen(ctx) }()
		if d.Dialect() != db.Postgres {
			if err := <-done; err != nil {
				t.Fatalf("Listen on %s = %v, want nil at once", d.Dialect(), err)
			}
			return
		}
		mustPush(t, a.reg, bundleFiles("second"), "second")
		// Activate repeatedly until b has it: the first NOTIFY may be sent
		// before b's LISTEN is in place (Listen's catch-up Poll covers that
		// case too).
		deadline := time.Now().Add(20 * time.Second)
		for b.eng.Active().Version != "second" {
			if time.Now().After(deadline) {
				t.Fatal("node b never received the activation")
			}
			if _, err := a.reg.Activate(ctx, "second", "alice"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("Listen = %v", err)
		}
	})
}

func TestSyncerStartNeedsAFallback(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		if err := newNode(d).sync.Start(context.Background(), nil); err == nil {
			t.Fatal("start on an empty registry without a fallback: no error")
		}
	})
}

// TestSyncerStartSameVersionOtherFiles: a node whose start-up bundle has the
// recorded version's name but other files runs the recorded files.
func TestSyncerStartSameVersionOtherFiles(t *testing.T) {
	eachBackend(t, func(t *testing.T, d *db.DB) {
		ctx := context.Background()
		a, b := newNode(d), newNode(d)
		mine := compiled(t, "dir:policies", bundleFiles("a"))
		if err := a.sync.Start(ctx, mine); err != nil {
			t.Fatal(err)
		}
		if err := b.sync.Start(ctx, compiled(t, "dir:policies", bundleFiles("b"))); err != nil {
			t.Fatal(err)
		}
		if got := b.eng.Active().Digest; got != mine.Digest {
			t.Errorf("node b runs %s, want the recorded files %s", got, mine.Digest)
		}
	})
}
