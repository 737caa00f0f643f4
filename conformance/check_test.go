package conformance

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	var doc any
	if err := json.Unmarshal([]byte(`{
		"sub": "alice", "depth": 2, "exp": 100, "active": true, "scope": "mail:read calendar:read",
		"aud": ["https://a", "agent-b"], "act": {"sub": "agent-b", "act": {"sub": "agent-a"}},
		"keys": [{"kid": "1", "kty": "EC"}, {"kid": "2", "kty": "EC"}], "empty": [],
		"tok": "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "uri": "https://x/y", "nul": null
	}`), &doc); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		src  string
		rhs  any // nil: the written value
		pass bool
	}{
		{"sub == alice", nil, true},
		{"sub == bob", nil, false},
		{"sub != bob", nil, true},
		{"depth == 2", nil, true},
		{"depth >= 3", nil, false},
		{"exp <= 100", nil, true},
		{"exp < 100", nil, false},
		{"active == true", nil, true},
		{"active == false", nil, false},
		{"scope subset mail:read calendar:read files:read", nil, true},
		{"scope ⊆ mail:read", nil, false},
		{"scope superset mail:read", nil, true},
		{"scope ⊇ files:read", nil, false},
		{"scope contains calendar:read", nil, true},
		{"scope contains calendar", nil, false},
		{"aud contains agent-b", nil, true},
		{"scope excludes mail:write", nil, true},
		{"scope excludes mail:read", nil, false},
		{"missing excludes anything", nil, true},
		{"act.act.sub == agent-a", nil, true},
		{"act.act.act absent", nil, true},
		{"act.act exists", nil, true},
		{"act absent", nil, false},
		{"nul absent", nil, true},
		{"nul exists", nil, false},
		{`act == {"sub":"agent-b","act":{"sub":"agent-a"}}`, nil, true},
		{"act.act == $t1.act", map[string]any{"sub": "agent-a"}, true},
		{"act == $t1.act", map[string]any{"sub": "agent-a"}, false},
		{"exp <= $t1.exp", float64(100), true},
		{"exp < $t1.exp", float64(100), false},
		{"keys.*.kid exists", nil, true},
		{"keys.*.kty == EC", nil, true},
		{"keys.*.d absent", nil, true},
		{"keys.1.kid == 2", nil, true},
		{"empty.*.kid exists", nil, false},
		{"sub matches ^al", nil, true},
		{"sub matches ^bo", nil, false},
		{"tok is jwt", nil, true},
		{"sub is jwt", nil, false},
		{"uri is uri", nil, true},
		{"sub is uri", nil, false},
		{"depth is integer", nil, true},
		{"keys is array", nil, true},
		{". is object", nil, true},
		{"missing == x", nil, false},
		{"missing absent", nil, true},
	}
	for _, c := range cases {
		ck, err := ParseCheck(c.src)
		if err != nil {
			t.Fatalf("%s: %v", c.src, err)
		}
		rhs, isRef := c.rhs, c.rhs != nil
		if !isRef {
			rhs = ck.RHS
		}
		err = ck.Eval(doc, rhs, isRef)
		if (err == nil) != c.pass {
			t.Errorf("%s: got %v, want pass=%v", c.src, err, c.pass)
		}
		if err != nil && !strings.Contains(err.Error(), c.src) {
			t.Errorf("%s: the reason %q does not quote the check", c.src, err)
		}
	}
}

func TestParseCheckErrors(t *testing.T) {
	for _, src := range []string{"", "sub", "sub ~= x", "sub exists x", "sub ==", "sub is thing", "sub matches (", "sub contains"} {
		if _, err := ParseCheck(src); err == nil {
			t.Errorf("%q: got no error", src)
		}
	}
}
