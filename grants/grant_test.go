package grants

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMatchResource(t *testing.T) {
	tests := []struct {
		pattern, resource string
		want              bool
	}{
		{"https://api.example.com/mail", "https://api.example.com/mail", true},
		{"https://api.example.com/mail", "https://api.example.com/mail/x", false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/inbox", true},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/", true},
		{"https://api.example.com/mail/*", "https://api.example.com/mail", false},
		{"https://api.example.com/mail/*", "https://api.example.com/calendar", false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/../admin", false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/%2e%2e/admin", false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/%2E%2e%2Fadmin", false},
		{"https://api.example.com/mail/*", `https://api.example.com/mail/..\admin`, false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/a b", false},
		{"https://api.example.com/mail/*", "https://api.example.com/mail/*", false},
		{"mail-*", "mail-api", true},
		{"*", "https://anything.example/", true},
		{"*", "", false},
		{"", "x", false},
		{"https://api.example.com/mail*", "https://api.example.com/mailbox", true},
		{"h*", "https://api.example.com/", false},
		{"mail*", "mail:x", false},
		{"urn:example:*", "urn:example:mail", true},
	}
	for _, tt := range tests {
		if got := MatchResource(tt.pattern, tt.resource); got != tt.want {
			t.Errorf("MatchResource(%q, %q) = %v, want %v", tt.pattern, tt.resource, got, tt.want)
		}
	}
}

func TestResourceCovers(t *testing.T) {
	tests := []struct {
		old, next string
		want      bool
	}{
		{"https://a.example/x/*", "https://a.example/x/y/*", true},
		{"https://a.example/x/*", "https://a.example/x/y", true},
		{"https://a.example/x/*", "https://a.example/*", false},
		{"https://a.example/x/*", "*", false},
		{"https://a.example/x", "https://a.example/x/*", false},
		{"https://a.example/x", "https://a.example/x", true},
		{"*", "https://b.example/*", true},
		{"https://a.example/x/*", "https://a.example/x/../*", false},
		{"h*", "https://a.example/*", false},
		{"mail-*", "mail-api-*", true},
	}
	for _, tt := range tests {
		if got := resourceCovers(tt.old, tt.next); got != tt.want {
			t.Errorf("resourceCovers(%q, %q) = %v, want %v", tt.old, tt.next, got, tt.want)
		}
	}
}

func TestCovers(t *testing.T) {
	g := &Grant{
		ID:        "grt_x",
		Status:    StatusActive,
		Scopes:    []string{"mail.read", "mail.search"},
		Resources: []string{"https://api.example.com/mail/*", "contacts-api"},
	}
	tests := []struct {
		scopes, resources []string
		want              bool
		reason            string
	}{
		{[]string{"mail.read"}, []string{"https://api.example.com/mail/inbox"}, true, ""},
		{nil, []string{"contacts-api"}, true, ""},
		{[]string{"mail.send"}, nil, false, `scope "mail.send" is not granted`},
		{[]string{"mail.read"}, []string{"https://api.example.com/admin"}, false, `resource "https://api.example.com/admin" is not granted`},
	}
	for _, tt := range tests {
		ok, reason := g.Covers(tt.scopes, tt.resources)
		if ok != tt.want || reason != tt.reason {
			t.Errorf("Covers(%q, %q) = %v, %q; want %v, %q", tt.scopes, tt.resources, ok, reason, tt.want, tt.reason)
		}
	}
	revoked := g.Clone()
	revoked.Status = StatusRevoked
	if ok, _ := revoked.Covers([]string{"mail.read"}, nil); ok {
		t.Error("a revoked grant covers a request")
	}
	var none *Grant
	if ok, _ := none.Covers(nil, nil); ok {
		t.Error("a nil grant covers a request")
	}
}

func TestAllowsSubAgent(t *testing.T) {
	g := &Grant{AllowedSubAgents: []string{"summarizer"}}
	if !g.AllowsSubAgent("summarizer") || g.AllowsSubAgent("other") || g.AllowsSubAgent("") {
		t.Error("explicit list not honoured")
	}
	g.AllowedSubAgents = []string{"*"}
	if !g.AllowsSubAgent("other") {
		t.Error(`"*" does not allow any client`)
	}
	g.AllowedSubAgents = nil
	if g.AllowsSubAgent("summarizer") {
		t.Error("empty list allows a sub-agent")
	}
}

func TestIDs(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if !ValidID(id) {
			t.Fatalf("newID() = %q is not ValidID", id)
		}
		if seen[id] {
			t.Fatalf("newID() repeated %q", id)
		}
		seen[id] = true
	}
	for _, bad := range []string{"", "grt_", "grt_ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", "xyz_abcdefghijklmnopqrstuvwxyz234567", "grt_abcdefghijklmnopqrstuvwxyz23456\x00"} {
		if ValidID(bad) {
			t.Errorf("ValidID(%q) = true", bad)
		}
	}
}

func TestValidateNew(t *testing.T) {
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	valid := func() *Grant {
		return &Grant{
			UserIssuer:  "https://login.example.com",
			UserSubject: "alice",
			ClientID:    "mail-agent",
			Scopes:      []string{"mail.read"},
			Resources:   []string{"https://api.example.com/mail/*"},
			ExpiresAt:   now.Add(time.Hour),
		}
	}
	tests := []struct {
		name  string
		edit  func(g *Grant)
		admin bool
		field string // "" means valid
	}{
		{"valid", func(g *Grant) {}, false, ""},
		{"no issuer", func(g *Grant) { g.UserIssuer = "" }, false, "user_issuer"},
		{"issuer with pipe", func(g *Grant) { g.UserIssuer = "a|b" }, false, "user_issuer"},
		{"long subject", func(g *Grant) { g.UserSubject = strings.Repeat("s", 256) }, false, "user_subject"},
		{"subject 255", func(g *Grant) { g.UserSubject = strings.Repeat("s", 255) }, false, ""},
		{"subject NUL", func(g *Grant) { g.UserSubject = "a\x00b" }, false, "user_subject"},
		{"subject bad UTF-8", func(g *Grant) { g.UserSubject = "a\xffb" }, false, "user_subject"},
		{"subject SQL", func(g *Grant) { g.UserSubject = "'; DROP TABLE grants; --" }, false, ""},
		{"client id", func(g *Grant) { g.ClientID = "-agent" }, false, "client_id"},
		{"client id long", func(g *Grant) { g.ClientID = strings.Repeat("a", 129) }, false, "client_id"},
		{"no scopes", func(g *Grant) { g.Scopes = nil }, false, "scopes"},
		{"scope space", func(g *Grant) { g.Scopes = []string{"mail read"} }, false, "scopes"},
		{"scope quote", func(g *Grant) { g.Scopes = []string{`mail"read`} }, false, "scopes"},
		{"scope backslash", func(g *Grant) { g.Scopes = []string{`mail\read`} }, false, "scopes"},
		{"scope unicode", func(g *Grant) { g.Scopes = []string{"mäil"} }, false, "scopes"},
		{"scope empty", func(g *Grant) { g.Scopes = []string{""} }, false, "scopes"},
		{"scope SQL", func(g *Grant) { g.Scopes = []string{"x');DROP--"} }, false, ""},
		{"101 scopes", func(g *Grant) {
			g.Scopes = nil
			for i := range 101 {
				g.Scopes = append(g.Scopes, "s"+strings.Repeat("x", i))
			}
		}, false, "scopes"},
		{"no resources", func(g *Grant) { g.Resources = nil }, false, ""},
		{"resource identifier", func(g *Grant) { g.Resources = []string{"mail-api"} }, false, ""},
		{"resource urn", func(g *Grant) { g.Resources = []string{"urn:example:mail"} }, false, ""},
		{"resource space", func(g *Grant) { g.Resources = []string{"https://a.example/ x"} }, false, "resources"},
		{"resource fragment", func(g *Grant) { g.Resources = []string{"https://a.example/#x"} }, false, "resources"},
		{"resource star middle", func(g *Grant) { g.Resources = []string{"https://a.example/*/x"} }, false, "resources"},
		{"resource host pattern", func(g *Grant) { g.Resources = []string{"https://api.example.com*"} }, false, "resources"},
		{"resource scheme pattern", func(g *Grant) { g.Resources = []string{"https:/*"} }, false, "resources"},
		{"resource urn scheme pattern", func(g *Grant) { g.Resources = []string{"urn:*"} }, false, "resources"},
		{"resource urn pattern", func(g *Grant) { g.Resources = []string{"urn:example:*"} }, false, ""},
		{"resource uppercase scheme pattern", func(g *Grant) { g.Resources = []string{"HTTPS://api.example.com/x/*"} }, false, "resources"},
		{"resource identifier pattern", func(g *Grant) { g.Resources = []string{"mail-*"} }, false, ""},
		{"resource userinfo", func(g *Grant) { g.Resources = []string{"https://api.example.com@evil.example/"} }, false, "resources"},
		{"resource dot segment", func(g *Grant) { g.Resources = []string{"https://a.example/x/../y"} }, false, "resources"},
		{"resource star by user", func(g *Grant) { g.Resources = []string{"*"} }, false, "resources"},
		{"resource star by admin", func(g *Grant) { g.Resources = []string{"*"} }, true, ""},
		{"resource empty", func(g *Grant) { g.Resources = []string{""} }, false, "resources"},
		{"depth 10", func(g *Grant) { g.MaxDepth = 10 }, false, ""},
		{"depth 11", func(g *Grant) { g.MaxDepth = 11 }, false, "max_depth"},
		{"depth -1", func(g *Grant) { g.MaxDepth = -1 }, false, "max_depth"},
		{"lifetime 24h", func(g *Grant) { g.MaxLifetime = 24 * time.Hour }, false, ""},
		{"lifetime 25h", func(g *Grant) { g.MaxLifetime = 25 * time.Hour }, false, "max_lifetime_seconds"},
		{"lifetime half second", func(g *Grant) { g.MaxLifetime = 500 * time.Millisecond }, false, "max_lifetime_seconds"},
		{"sub-agents", func(g *Grant) { g.AllowedSubAgents = []string{"summarizer", "*"} }, false, ""},
		{"bad sub-agent", func(g *Grant) { g.AllowedSubAgents = []string{"a b"} }, false, "allowed_sub_agents"},
		{"no expiry", func(g *Grant) { g.ExpiresAt = time.Time{} }, false, "expires_at"},
		{"past expiry", func(g *Grant) { g.ExpiresAt = now.Add(-time.Second) }, false, "expires_at"},
		{"expiry now", func(g *Grant) { g.ExpiresAt = now.Add(500 * time.Millisecond) }, false, "expires_at"},
		{"expiry a year", func(g *Grant) { g.ExpiresAt = now.Add(MaxGrantDuration) }, false, ""},
		{"expiry past a year", func(g *Grant) { g.ExpiresAt = now.Add(MaxGrantDuration + time.Second) }, false, "expires_at"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := valid()
			tt.edit(g)
			_, err := validateNew(g, now, tt.admin)
			var verr *ValidationError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("got %v, want valid", err)
			case tt.field != "" && !errors.As(err, &verr):
				t.Fatalf("got %v, want a ValidationError on %s", err, tt.field)
			case tt.field != "" && verr.Field != tt.field:
				t.Fatalf("got field %q (%v), want %q", verr.Field, err, tt.field)
			}
		})
	}
}

func TestValidateNewNormalizes(t *testing.T) {
	now := time.Now()
	in := &Grant{
		UserIssuer: "iss", UserSubject: "sub", ClientID: "c",
		Scopes:    []string{"b", "a", "b"},
		ExpiresAt: now.Add(time.Hour + 700*time.Millisecond),
	}
	g, err := validateNew(in, now, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(g.Scopes, " "); got != "b a" {
		t.Errorf("scopes: got %q, want %q", got, "b a")
	}
	if g.ExpiresAt.Nanosecond() != 0 || g.ExpiresAt.After(in.ExpiresAt) {
		t.Errorf("expiry: got %v, want %v truncated to the second", g.ExpiresAt, in.ExpiresAt)
	}
	if len(in.Scopes) != 3 {
		t.Error("validateNew modified its input")
	}
	if g.Resources == nil || g.AllowedSubAgents == nil {
		t.Error("nil lists not normalized to empty")
	}
}

func TestParseActor(t *testing.T) {
	tests := []struct {
		actor    string
		admin    bool
		iss, sub string
		ok       bool
	}{
		{"admin", true, "", "", true},
		{UserActor("https://i", "a|b"), false, "https://i", "a|b", true},
		{"user:https://i", false, "", "", false},
		{"user:|sub", false, "", "", false},
		{"root", false, "", "", false},
		{"", false, "", "", false},
	}
	for _, tt := range tests {
		admin, iss, sub, err := parseActor(tt.actor)
		if (err == nil) != tt.ok || admin != tt.admin || iss != tt.iss || sub != tt.sub {
			t.Errorf("parseActor(%q) = %v %q %q %v", tt.actor, admin, iss, sub, err)
		}
	}
}
