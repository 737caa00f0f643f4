package decisionlog

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
)

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

var (
	testJWS     = b64(`{"alg":"ES256","typ":"at+jwt","kid":"k1"}`) + "." + b64(`{"sub":"alice","scope":"mail:read"}`) + ".c2lnbmF0dXJl"
	testUnsafe  = b64(`{"alg":"none"}`) + "." + b64(`{"sub":"alice"}`) + "."
	testJWE     = b64(`{"alg":"dir","enc":"A256GCM"}`) + "..aXZpdmVpdml2aXY.Y2lwaGVydGV4dA.dGFndGFndGFn"
	testSpaced  = b64("{\n  \"alg\": \"RS256\"\n}") + "." + b64(`{}`) + ".c2ln"
	notATokenJS = b64(`{"typ":"JWT"}`) + "." + b64(`{"sub":"alice"}`) + ".c2ln" // no alg: not a JOSE header
)

func TestFindToken(t *testing.T) {
	cases := []struct {
		in   string
		want string // the token found, "" for none
	}{
		{testJWS, testJWS},
		{testUnsafe, testUnsafe},
		{testJWE, testJWE},
		{testSpaced, testSpaced},
		{"Bearer " + testJWS, testJWS},
		{"token=" + testJWS + "&x=1", testJWS},
		{`{"id_token":"` + testJWS + `"}`, testJWS},
		{"prefix." + testJWS, testJWS},
		{"Bearer" + testJWS, testJWS},
		{`line\n` + testJWS, testJWS},  // as JSON escapes a newline
		{`x\u0001` + testJWS, testJWS}, // as JSON escapes a control character
		{"abcdefgh" + testJWS, ""},     // too far glued: not read as a token
		{"mail.example.com", ""},
		{"https://files.example.com/alice/report.v1.pdf", ""},
		{"1.2.3", ""},
		{"eyJhbGciOiJFUzI1NiJ9", ""}, // a header alone
		{"eyJhbGciOiJFUzI1NiJ9.eyJ9", ""},
		{notATokenJS, ""},
		{"e30.e30.e30", ""},
		{"", ""},
		{strings.Repeat("eyJ.", 100), ""},
	}
	for _, c := range cases {
		a, b := findToken(c.in)
		got := ""
		if a >= 0 {
			got = c.in[a:b]
		}
		if got != c.want {
			t.Errorf("findToken(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestRedactString(t *testing.T) {
	in := "claim x was " + testJWS + " and then " + testJWE + "."
	got := redactString(in)
	want := "claim x was " + redacted + " and then " + redacted + "."
	if got != want {
		t.Errorf("redactString = %q, want %q", got, want)
	}
	if s := "no token in mail.example.com"; redactString(s) != s {
		t.Errorf("redactString changed %q", s)
	}
}

func TestSanitizeJSON(t *testing.T) {
	doc := `{"subject":{"claims":{"sub":"alice","id_token":"` + testJWS + `","email":"alice@example.com","note":"a\n` + testJWS + `",
		"ext":{"upstream":"Bearer ` + testJWE + `","host":"mail.example.com","n":12345678901234567890},
		"list":["ok","` + testJWS + `"],"` + testJWS + `":true}}}`
	out, err := sanitizeJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if hasToken(string(out)) {
		t.Fatalf("a token survived: %s", out)
	}
	var got struct {
		Subject struct {
			Claims map[string]any `json:"claims"`
		} `json:"subject"`
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	dec.UseNumber()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	c := got.Subject.Claims
	if _, ok := c["id_token"]; ok {
		t.Error("id_token claim kept")
	}
	if c["sub"] != "alice" || c["email"] != "alice@example.com" {
		t.Errorf("plain claims lost: %v", c)
	}
	ext := c["ext"].(map[string]any)
	if _, ok := ext["upstream"]; ok || ext["host"] != "mail.example.com" || ext["n"].(json.Number).String() != "12345678901234567890" {
		t.Errorf("ext = %v", ext)
	}
	if list := c["list"].([]any); len(list) != 2 || list[0] != "ok" || list[1] != redacted {
		t.Errorf("list = %v", list)
	}
	if len(c) != 4 {
		t.Errorf("claims = %v, want sub, email, ext, list and no token-named key", c)
	}

	clean := []byte(`{"a":"mail.example.com","b":[1,2]}`)
	if out, err := sanitizeJSON(clean); err != nil || &out[0] != &clean[0] {
		t.Errorf("a clean document was rewritten")
	}
}

func FuzzRedactString(f *testing.F) {
	for _, s := range []string{testJWS, testJWE, testUnsafe, "Bearer " + testJWS + " " + testJWS, "a.b.c", "eyJ.eyJ.eyJ", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := redactString(s)
		if hasToken(out) {
			t.Fatalf("redactString(%q) = %q still holds a token", s, out)
		}
		if !hasToken(s) && out != s {
			t.Fatalf("redactString changed %q without a token", s)
		}
	})
}
