package app_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mandate-dev/mandate/internal/app"
)

// benchEnv is a node with users, an agent and grants, driven in-process (no
// network): the numbers are the broker's own cost per request.
type benchEnv struct {
	a      *app.App
	h      http.Handler
	agent  string
	secret string
	users  []string // user tokens
	resrc  string
}

func newBenchEnv(b *testing.B, users int) *benchEnv {
	return newBenchEnvDSN(b, users, sqliteBenchDSN)
}

func (e *benchEnv) exchange(b *testing.B, user string) {
	v := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {user},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"scope":              {"mail:read"},
		"resource":           {e.resrc},
	}
	req := httptest.NewRequest("POST", "/oauth2/token", strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(e.agent, e.secret)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != 200 {
		b.Fatalf("exchange: %d %s", rec.Code, rec.Body.String())
	}
}

// BenchmarkExchange is one full token exchange: client authentication, subject
// token verification, grant lookup, policy decision, signing, audit record.
func BenchmarkExchange(b *testing.B) {
	env := newBenchEnv(b, 100)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		env.exchange(b, env.users[i%len(env.users)])
	}
}

// BenchmarkExchangeParallel runs exchanges on every core.
func BenchmarkExchangeParallel(b *testing.B) {
	env := newBenchEnv(b, 100)
	var n atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			env.exchange(b, env.users[int(n.Add(1))%len(env.users)])
		}
	})
}

// BenchmarkClientAuthentication is the token endpoint's client authentication
// alone (cached client lookup and keyed secret hash), through fosite.
func BenchmarkClientAuthentication(b *testing.B) {
	env := newBenchEnv(b, 0)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		req := httptest.NewRequest("POST", "/oauth2/introspect", strings.NewReader("token=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(env.agent, env.secret)
		_ = req.ParseForm()
		if _, err := env.a.Broker.AuthenticateClient(req.Context(), req); err != nil {
			b.Fatal(err)
		}
	}
}
