package loadgen

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// topErrors is how many distinct errors a report lists.
const topErrors = 5

// Report is the outcome of a measured phase. Field names are the JSON of
// `mandate bench --json`.
type Report struct {
	Scenario    string `json:"scenario"`
	Mode        string `json:"mode"` // "closed" or "open"
	Concurrency int    `json:"concurrency"`
	// TargetRate is the requested open-loop rate (req/s); 0 in a closed loop.
	TargetRate int `json:"target_rate,omitempty"`
	// DurationSeconds is the measured wall time: first request to last answer.
	DurationSeconds float64 `json:"duration_seconds"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Requests        uint64  `json:"requests"`
	Successes       uint64  `json:"successes"` // 2xx answers
	Errors          uint64  `json:"errors"`    // everything else, transport errors included
	// Throughput is every answered or failed request per second of DurationSeconds.
	Throughput float64 `json:"throughput_rps"`
	// SuccessThroughput counts only successes.
	SuccessThroughput float64 `json:"success_rps"`
	// Latency is over every request, errors included, in milliseconds.
	Latency Latency `json:"latency_ms"`
	// StatusCodes counts answers by HTTP status; "0" is a request with no answer
	// (refused, reset, timed out).
	StatusCodes map[string]uint64 `json:"status_codes"`
	// TopErrors are the most frequent errors, most frequent first.
	TopErrors []ErrorCount `json:"top_errors"`
	// DistinctErrors is how many distinct errors there were in all.
	DistinctErrors int `json:"distinct_errors"`
	// HitMaxRequests says the phase ended on Options.MaxRequests, not on time.
	HitMaxRequests bool `json:"hit_max_requests,omitempty"`
	// Interrupted says the phase was cut short (its context ended).
	Interrupted bool `json:"interrupted,omitempty"`

	maxRequests uint64
	latencies   []time.Duration
	errs        map[errorKey]*ErrorCount
}

// Latency holds exact percentiles (nearest rank over every request) in milliseconds.
type Latency struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// ErrorCount is one kind of error and how often it came.
type ErrorCount struct {
	// Status is the HTTP status; 0 when there was no answer.
	Status int `json:"status"`
	// Error is the answer's OAuth "error" code (or the error of its
	// WWW-Authenticate challenge, or the status text), or the transport error.
	Error string `json:"error"`
	// Description is the first "error_description" seen with it, shortened.
	Description string `json:"error_description,omitempty"`
	Count       uint64 `json:"count"`
}

type errorKey struct {
	status int
	code   string
}

func newReport(name string, o Options) *Report {
	r := &Report{
		Scenario: name, Mode: "closed", Concurrency: o.Concurrency, TargetRate: o.Rate,
		WarmupSeconds: o.Warmup.Seconds(), StatusCodes: map[string]uint64{},
		maxRequests: o.MaxRequests, errs: map[errorKey]*ErrorCount{},
	}
	if o.Rate > 0 {
		r.Mode = "open"
	}
	return r
}

// add records one result. It runs on one goroutine.
func (r *Report) add(res *vegeta.Result) {
	r.Requests++
	r.latencies = append(r.latencies, res.Latency)
	r.StatusCodes[strconv.Itoa(int(res.Code))]++
	if res.Code >= 200 && res.Code < 300 && res.Error == "" {
		r.Successes++
		return
	}
	r.Errors++
	status, code, desc := classify(res)
	k := errorKey{status, code}
	e := r.errs[k]
	if e == nil {
		e = &ErrorCount{Status: status, Error: code, Description: desc}
		r.errs[k] = e
	}
	e.Count++
}

// classify names a failed result. Only the error members of a JSON body are
// read: a body may hold a token, and no other part of it is kept.
func classify(res *vegeta.Result) (status int, code, desc string) {
	status = int(res.Code)
	if status == 0 {
		return 0, shorten(trimURLError(res.Error), 200), ""
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(res.Body, &body) == nil && body.Error != "" {
		return status, shorten(body.Error, 64), shorten(body.Description, 200)
	}
	if c := challengeError(res.Headers.Get("WWW-Authenticate")); c != "" {
		return status, c, ""
	}
	if status >= 200 && status < 300 {
		// A 2xx whose body could not be read completely.
		return status, shorten(trimURLError(res.Error), 200), ""
	}
	return status, http.StatusText(status), ""
}

// challengeError returns the error parameter of an RFC 6750 challenge.
func challengeError(h string) string {
	_, rest, ok := strings.Cut(h, `error="`)
	if !ok {
		return ""
	}
	code, _, _ := strings.Cut(rest, `"`)
	return shorten(code, 64)
}

// shorten keeps s printable and at most n runes long.
func shorten(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

func (r *Report) finish(elapsed time.Duration) {
	r.DurationSeconds = elapsed.Seconds()
	if elapsed > 0 {
		r.Throughput = float64(r.Requests) / elapsed.Seconds()
		r.SuccessThroughput = float64(r.Successes) / elapsed.Seconds()
	}
	r.HitMaxRequests = r.Requests >= r.maxRequests
	if n := len(r.latencies); n > 0 {
		slices.Sort(r.latencies)
		var sum time.Duration
		for _, d := range r.latencies {
			sum += d
		}
		r.Latency = Latency{
			Mean: ms(sum / time.Duration(n)),
			P50:  ms(percentile(r.latencies, 0.50)),
			P90:  ms(percentile(r.latencies, 0.90)),
			P99:  ms(percentile(r.latencies, 0.99)),
			Max:  ms(r.latencies[n-1]),
		}
	}
	r.latencies = nil
	all := make([]ErrorCount, 0, len(r.errs))
	for _, e := range r.errs {
		all = append(all, *e)
	}
	slices.SortFunc(all, func(a, b ErrorCount) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Status, b.Status), strings.Compare(a.Error, b.Error))
	})
	r.DistinctErrors = len(all)
	r.TopErrors = all[:min(len(all), topErrors)]
}

// percentile is the nearest-rank percentile of sorted, which is not empty.
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtMs prints a millisecond figure with the precision that matters at its size.
func fmtMs(v float64) string {
	switch {
	case v < 1:
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	case v < 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	default:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	}
}

// Line is the one-line summary:
//
//	exchange: 6123.4 req/s  p50 3.1ms  p90 6.0ms  p99 9.8ms  max 41ms  errors 0/91851
func (r *Report) Line() string {
	return fmt.Sprintf("%s: %.1f req/s  p50 %s  p90 %s  p99 %s  max %s  errors %d/%d",
		r.Scenario, r.Throughput, fmtMs(r.Latency.P50), fmtMs(r.Latency.P90), fmtMs(r.Latency.P99),
		fmtMs(r.Latency.Max), r.Errors, r.Requests)
}

// WriteText writes the summary line and, under it, the run's shape, the status
// histogram and the top errors.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	b.WriteString(r.Line())
	b.WriteByte('\n')
	shape := fmt.Sprintf("closed loop, concurrency %d", r.Concurrency)
	if r.Mode == "open" {
		shape = fmt.Sprintf("open loop, target %d req/s (achieved %.1f), at most %d in flight", r.TargetRate, r.Throughput, r.Concurrency)
	}
	fmt.Fprintf(&b, "  %s, measured %.2fs after %gs warmup, mean %s\n", shape, r.DurationSeconds, r.WarmupSeconds, fmtMs(r.Latency.Mean))
	if r.Errors > 0 {
		fmt.Fprintf(&b, "  successes: %.1f req/s\n", r.SuccessThroughput)
	}
	codes := make([]string, 0, len(r.StatusCodes))
	for c := range r.StatusCodes {
		codes = append(codes, c)
	}
	slices.SortFunc(codes, func(a, b string) int {
		x, _ := strconv.Atoi(a)
		y, _ := strconv.Atoi(b)
		return cmp.Compare(x, y)
	})
	parts := make([]string, 0, len(codes))
	for _, c := range codes {
		label := c
		if c == "0" {
			label = "no-answer"
		}
		parts = append(parts, fmt.Sprintf("%s×%d", label, r.StatusCodes[c]))
	}
	fmt.Fprintf(&b, "  status: %s\n", strings.Join(parts, "  "))
	for _, e := range r.TopErrors {
		status := strconv.Itoa(e.Status)
		if e.Status == 0 {
			status = "no answer"
		}
		fmt.Fprintf(&b, "  error ×%d: %s %s", e.Count, status, e.Error)
		if e.Description != "" {
			fmt.Fprintf(&b, ": %s", e.Description)
		}
		b.WriteByte('\n')
	}
	if more := r.DistinctErrors - len(r.TopErrors); more > 0 {
		fmt.Fprintf(&b, "  (%d more distinct errors)\n", more)
	}
	if r.HitMaxRequests {
		fmt.Fprintf(&b, "  stopped at the request cap (%d), before the duration ended\n", r.maxRequests)
	}
	if r.Interrupted {
		b.WriteString("  interrupted: the figures cover the part that ran\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}
