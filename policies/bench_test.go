package policies

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Run with: go test -bench . -benchmem -run '^$' ./policies/
//
// Besides ns/op (the mean wall-clock time), each single-goroutine benchmark
// reports percentiles of one Decide call, measured around every call:
// p50-ns and p99-ns on the wall clock, and p50-cpu-ns and p99-cpu-ns in CPU
// time of the deciding thread (Linux only), which leave out the time the
// thread waited for a CPU: on a shared machine that wait is most of the tail.
// The engines here use a 1s timeout rather than the default 50ms so that a
// stalled machine shows in the figures instead of aborting the run.

// percentiles reports the p50 and p99 of samples as metrics named prefix+"p50"+unit.
func percentiles(b *testing.B, samples []int64, name string) {
	if len(samples) == 0 {
		return
	}
	slices.Sort(samples)
	at := func(q float64) float64 { return float64(samples[int(q*float64(len(samples)-1))]) }
	b.ReportMetric(at(0.50), "p50-"+name)
	b.ReportMetric(at(0.99), "p99-"+name)
}

// benchDecide runs Decide b.N times on one goroutine, locked to its thread so
// that the thread's CPU time is the decision's.
func benchDecide(b *testing.B, e *Engine, in *Input, allow bool) {
	b.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx := context.Background()
	if d, err := e.Decide(ctx, in); err != nil || d.Allow != allow {
		b.Fatalf("Decide = %+v, %v; want allow %v", d, err, allow)
	}
	_, cpuOK := threadCPUTime()
	wall := make([]int64, b.N)
	cpu := make([]int64, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		c0, _ := threadCPUTime()
		start := time.Now()
		_, err := e.Decide(ctx, in)
		wall[i] = int64(time.Since(start))
		if cpuOK {
			c1, _ := threadCPUTime()
			cpu = append(cpu, c1-c0)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	percentiles(b, wall, "ns")
	percentiles(b, cpu, "cpu-ns")
}

func benchEngine(b *testing.B, bundle *Bundle) *Engine {
	e := NewEngine(EngineConfig{Timeout: time.Second})
	e.Activate(bundle)
	return e
}

// BenchmarkDecideDefault is one decision of the default bundle: alice's
// agent reading her mail (allow), and the same agent with no grant (deny).
func BenchmarkDecideDefault(b *testing.B) {
	e := benchEngine(b, mustDefault(b))
	b.Run("allow", func(b *testing.B) {
		benchDecide(b, e, aliceInput(), true)
	})
	b.Run("deny", func(b *testing.B) {
		in := aliceInput()
		in.Grant = nil
		benchDecide(b, e, in, false)
	})
}

// BenchmarkDecideLarge is a decision of the default bundle extended with a
// scope ceiling for each of 1,000 clients, written two ways: as 1,000
// definitions of one rule guarded by `input.client.id == "..."`, which OPA's
// rule index resolves without evaluating the other 999, and as a data.json
// object keyed by client ID.
func BenchmarkDecideLarge(b *testing.B) {
	const clients = 1000
	in := aliceInput()
	in.Client.ID = fmt.Sprintf("client-%04d", clients/2)
	in.Actor.ClientID = in.Client.ID
	in.Chain = []ChainLink{{Sub: in.Client.ID}}

	var rules strings.Builder
	rules.WriteString("package mandate.clients\n\n# The most each client may ask for.\n")
	data := map[string]any{}
	for i := range clients {
		id := fmt.Sprintf("client-%04d", i)
		scopes := []string{"mail:read", "mail:write", fmt.Sprintf("app%d:read", i)}
		quoted, _ := json.Marshal(scopes)
		fmt.Fprintf(&rules, "ceiling := {\"scopes\": %s, \"audiences\": [\"https://mail.example.com\"]} if input.client.id == %q\n", quoted, id)
		data[id] = map[string]any{"scopes": scopes, "audiences": []string{"https://mail.example.com"}}
	}
	dataJSON, err := json.Marshal(map[string]any{"ceilings": data})
	if err != nil {
		b.Fatal(err)
	}

	const check = `package mandate.exchange

deny contains msg if {
	not %[1]s
	msg := sprintf("client %%s has no ceiling", [input.client.id])
}

deny contains msg if {
	some scope in input.request.scopes
	not scope in %[1]s.scopes
	msg := sprintf("scope %%s is above the ceiling of client %%s", [scope, input.client.id])
}
`
	variants := []struct {
		name  string
		files map[string]string
	}{
		{"rules", map[string]string{
			"clients.rego":         rules.String(),
			"client_ceilings.rego": fmt.Sprintf(check, "data.mandate.clients.ceiling"),
		}},
		{"data", map[string]string{
			"mandate/data.json":    string(dataJSON),
			"client_ceilings.rego": fmt.Sprintf(check, "data.mandate.ceilings[input.client.id]"),
		}},
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			files := DefaultFiles()
			for name, src := range v.files {
				files[name] = src
			}
			bundle, err := Compile(context.Background(), "large-"+v.name, files)
			if err != nil {
				b.Fatal(err)
			}
			e := benchEngine(b, bundle)
			// The ceiling applies: a scope above it is refused.
			over := aliceInput()
			over.Client.ID, over.Chain = in.Client.ID, in.Chain
			over.Grant.Scopes = append(over.Grant.Scopes, "app1:read")
			over.Request.Scopes = []string{"app1:read"}
			if d, err := e.Decide(context.Background(), over); err != nil || d.Allow {
				b.Fatalf("Decide above the ceiling = %+v, %v; want deny", d, err)
			}
			benchDecide(b, e, in, true)
		})
	}
}

// BenchmarkDecideParallel is BenchmarkDecideDefault/allow on every CPU.
func BenchmarkDecideParallel(b *testing.B) {
	e := benchEngine(b, mustDefault(b))
	ctx := context.Background()
	var (
		mu  sync.Mutex
		all []int64
	)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		in := aliceInput()
		local := make([]int64, 0, 1024)
		for pb.Next() {
			start := time.Now()
			d, err := e.Decide(ctx, in)
			local = append(local, int64(time.Since(start)))
			if err != nil || !d.Allow {
				b.Errorf("Decide = %+v, %v", d, err)
				return
			}
		}
		mu.Lock()
		all = append(all, local...)
		mu.Unlock()
	})
	b.StopTimer()
	percentiles(b, all, "ns")
}
