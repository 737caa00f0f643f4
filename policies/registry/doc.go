// Package registry is the policy bundle lifecycle: it stores versioned
// bundles that compiled and passed their own tests, records which one is
// active, and keeps every node's engine on it.
//
// A bundle is pushed, then activated; a push never changes what runs:
//
//	reg := registry.New(d, registry.Options{})
//	rec, err := reg.Push(ctx, files, "alice", "") // compiles, runs the tests, stores "v3-1a2b3c4d"
//	var bad *registry.InvalidBundleError
//	if errors.As(err, &bad) {
//		for _, p := range bad.Problems { fmt.Println(p) }    // exchange.rego:12:3: rego_parse_error: ...
//		for _, t := range bad.FailedTests { fmt.Println(t.Name, t.Location) }
//	}
//	_, err = reg.Activate(ctx, rec.Version, "alice")
//	_, err = reg.Rollback(ctx, "alice") // back to the bundle active before
//
// Each node runs a Syncer for its engine. Start loads the active bundle, or,
// on a database where nothing was activated yet, records the node's start-up
// bundle (the embedded default, or the policies.dir folder) as the first
// activation. Poll, on a short timer, picks up what other nodes activated;
// on PostgreSQL, Listen polls as soon as an activation is announced on
// Channel:
//
//	eng := policies.NewEngine(policies.EngineConfig{})
//	sync := registry.NewSyncer(reg, eng, registry.SyncerOptions{})
//	if err := sync.Start(ctx, startupBundle); err != nil { ... }
//	go sync.Listen(ctx)                        // PostgreSQL; returns at once on SQLite
//	for range time.Tick(500 * time.Millisecond) { sync.Poll(ctx) }
//
// The activation history is append-only (table policy_activations), and
// rollback walks it back like a stack. Compiled bundles are cached by
// version, and an engine swaps bundles atomically, so no request is decided
// by a half-loaded bundle.
package registry
