// Package loadgen is the engine of `mandate bench`: it drives an HTTP endpoint
// for a bounded time and request count, and reports throughput, latency
// percentiles, the status-code histogram and the most frequent errors.
//
// It runs on vegeta's attacker (github.com/tsenart/vegeta/v12/lib) in one of
// two modes:
//
//   - closed loop (Rate 0): Concurrency workers each send a request, wait for the
//     answer and send the next, so throughput is what the server sustains at that
//     many requests in flight;
//   - open loop (Rate N): requests are started at N per second whatever the
//     server does, with at most Concurrency in flight. When every worker is busy
//     the schedule slips, and the report shows the achieved rate next to the
//     target.
//
// A request is picked uniformly at random from the Targets for every hit; build
// every distinct request (one per user, one per client) before the run, so the
// generator spends its CPU on sending, not on encoding.
//
// Targets must be loopback addresses unless Options.AllowRemote is set: the
// check is made on the URL before the run (CheckTarget) and again on every
// dial, so neither a DNS answer nor a redirect can send load elsewhere.
//
//	rep, err := loadgen.Run(ctx, "exchange", targets, loadgen.Options{
//		Concurrency: 32, Duration: 15 * time.Second, Warmup: 2 * time.Second,
//	})
//	if err != nil { ... }
//	fmt.Println(rep.Line()) // exchange: 6123.4 req/s  p50 3.1ms  p90 6.0ms  p99 9.8ms  max 41ms  errors 0/91851
//
// Response bodies of successful requests are dropped unread by the report, and
// only the "error" and "error_description" members of error bodies are kept, so
// tokens never reach the report.
package loadgen
