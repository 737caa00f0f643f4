package server

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mandate-dev/mandate/broker"
	"github.com/mandate-dev/mandate/internal/db"
)

// Metrics are mandate's Prometheus metrics, served at /metrics. Label values are
// bounded (route templates, grant types, result, error codes), never ids or tokens.
type Metrics struct {
	Registry   *prometheus.Registry
	requests   *prometheus.HistogramVec
	exchanges  *prometheus.HistogramVec
	decisions  *prometheus.CounterVec
	policyEval prometheus.Histogram
	inFlight   prometheus.Gauge
}

// NewMetrics registers the metrics. d may be nil; its pool stats are exported when set.
func NewMetrics(d *db.DB) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buckets := []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	m := &Metrics{
		Registry: reg,
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mandate_http_request_duration_seconds", Help: "HTTP request latency by route and status class.", Buckets: buckets,
		}, []string{"method", "route", "code"}),
		exchanges: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "mandate_token_request_duration_seconds", Help: "Token endpoint latency by grant type and outcome.", Buckets: buckets,
		}, []string{"grant_type", "result"}),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mandate_token_decisions_total", Help: "Token requests by grant type, result and OAuth error code.",
		}, []string{"grant_type", "result", "error"}),
		policyEval: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "mandate_policy_eval_duration_seconds", Help: "Policy decision evaluation time.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .005, .01, .05},
		}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{Name: "mandate_http_in_flight_requests", Help: "Requests being served."}),
	}
	reg.MustRegister(m.requests, m.exchanges, m.decisions, m.policyEval, m.inFlight)
	if d != nil {
		registerDBStats(reg, d)
	}
	return m
}

func registerDBStats(reg *prometheus.Registry, d *db.DB) {
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	if p := d.Pool(); p != nil {
		gauge("mandate_db_pool_total_conns", "Connections in the PostgreSQL pool.", func() float64 { return float64(p.Stat().TotalConns()) })
		gauge("mandate_db_pool_acquired_conns", "Connections in use.", func() float64 { return float64(p.Stat().AcquiredConns()) })
		gauge("mandate_db_pool_idle_conns", "Idle connections.", func() float64 { return float64(p.Stat().IdleConns()) })
		gauge("mandate_db_pool_max_conns", "Pool size limit.", func() float64 { return float64(p.Stat().MaxConns()) })
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mandate_db_pool_acquire_wait_seconds_total", Help: "Time spent waiting for a connection."},
			func() float64 { return p.Stat().AcquireDuration().Seconds() }))
	}
	if s := d.SQL(); s != nil {
		gauge("mandate_db_pool_total_conns", "Open SQLite connections.", func() float64 { return float64(s.Stats().OpenConnections) })
		gauge("mandate_db_pool_acquired_conns", "Connections in use.", func() float64 { return float64(s.Stats().InUse) })
		gauge("mandate_db_pool_idle_conns", "Idle connections.", func() float64 { return float64(s.Stats().Idle) })
		gauge("mandate_db_pool_max_conns", "Pool size limit.", func() float64 { return float64(s.Stats().MaxOpenConnections) })
	}
}

// Gauge registers a gauge whose value f computes at scrape time (revocation set
// size, feed lag, cache hits of other packages).
func (m *Metrics) Gauge(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
}

// Counter registers a counter whose value f reads at scrape time.
func (m *Metrics) Counter(name, help string, f func() float64) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
}

// RecordDecision implements broker.DecisionRecorder for the metrics.
func (m *Metrics) RecordDecision(_ context.Context, a *broker.Audit) {
	result := "issued"
	if a.Error != "" {
		result = "refused"
	}
	m.decisions.WithLabelValues(grantLabel(a.GrantType), result, a.Error).Inc()
	m.exchanges.WithLabelValues(grantLabel(a.GrantType), result).Observe(a.Duration.Seconds())
	if a.EvalDuration > 0 {
		m.policyEval.Observe(a.EvalDuration.Seconds())
	}
}

func grantLabel(gt string) string {
	switch gt {
	case broker.GrantTypeTokenExchange:
		return "token_exchange"
	case broker.GrantTypeClientCredentials:
		return "client_credentials"
	}
	return "other"
}

// Middleware observes every request's latency by route template.
func (m *Metrics) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			m.inFlight.Inc()
			defer m.inFlight.Dec()
			err := next(c)
			route := c.Path()
			if route == "" {
				route = "unmatched"
			}
			status := c.Response().Status
			if err != nil {
				if he, ok := err.(*echo.HTTPError); ok {
					status = he.Code
				}
			}
			m.requests.WithLabelValues(c.Request().Method, route, strconv.Itoa(status/100)+"xx").Observe(time.Since(start).Seconds())
			return err
		}
	}
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{})
}
