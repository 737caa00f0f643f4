package conformance

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMetadataURLFor(t *testing.T) {
	for in, want := range map[string]string{
		"https://as.example.com":          "https://as.example.com/.well-known/oauth-authorization-server",
		"https://as.example.com/":         "https://as.example.com/.well-known/oauth-authorization-server",
		"https://as.example.com/tenant/1": "https://as.example.com/.well-known/oauth-authorization-server/tenant/1",
		"http://127.0.0.1:8080":           "http://127.0.0.1:8080/.well-known/oauth-authorization-server",
	} {
		got, err := MetadataURLFor(in)
		if err != nil || got != want {
			t.Errorf("%s: got %q %v, want %q", in, got, err, want)
		}
	}
	if _, err := MetadataURLFor("/relative"); err == nil {
		t.Error("a relative issuer gives no error")
	}
}

func TestLoadTargetExample(t *testing.T) {
	tg, err := LoadTarget(filepath.Join("testdata", "target.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if tg.Issuer != "https://as.example.com" || tg.IdP.Addr != "127.0.0.1:9999" || len(tg.Clients) != 5 {
		t.Fatalf("target: %+v", tg)
	}
	if c := tg.Clients[RolePrivateKeyJWT]; c.key == nil || c.Alg != "ES256" || c.KeyID != "pkjwt-1" {
		t.Fatalf("pkjwt client: %+v", c)
	}
	if c := tg.Clients[RoleAgentA]; c.AuthMethod != "client_secret_basic" {
		t.Fatalf("default auth method: got %q", c.AuthMethod)
	}
	// Secrets and keys never reach the JSON report of a target.
	b, _ := json.Marshal(tg)
	if bytes.Contains(b, []byte("secret-a")) || bytes.Contains(b, []byte("PRIVATE")) {
		t.Fatalf("target JSON leaks a secret: %s", b)
	}
}

func TestLoadTargetRefusesMistakes(t *testing.T) {
	for name, src := range map[string]string{
		"no issuer":        "idp: {audience: x}\n",
		"no audience":      "issuer: https://as\n",
		"unknown key":      "issuer: https://as\nidp: {audience: x}\ncolour: red\n",
		"unknown role":     "issuer: https://as\nidp: {audience: x}\nclients: {agent_z: {client_id: z, client_secret: s}}\n",
		"no secret":        "issuer: https://as\nidp: {audience: x}\nclients: {agent_a: {client_id: a}}\n",
		"no key":           "issuer: https://as\nidp: {audience: x}\nclients: {pkjwt: {client_id: p, auth_method: private_key_jwt}}\n",
		"bad method":       "issuer: https://as\nidp: {audience: x}\nclients: {agent_a: {client_id: a, client_secret: s, auth_method: tls_client_auth}}\n",
		"unknown feature":  "issuer: https://as\nidp: {audience: x}\nfeatures: [teleport]\n",
		"missing key file": "issuer: https://as\nidp: {audience: x}\nclients: {pkjwt: {client_id: p, auth_method: private_key_jwt, private_key_file: nope.pem}}\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "t.yaml")
			if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadTarget(path); err == nil || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming the file", err)
			}
		})
	}
}

func TestReport(t *testing.T) {
	var r Report
	r.add(Result{Name: "a", Status: Pass})
	r.add(Result{Name: "b", Status: Fail, Why: "broken\nbadly"})
	if got := r.Summary(); got != "1 passed, 1 failed" {
		t.Errorf("summary: got %q", got)
	}
	r.add(Result{Name: "c", Status: Skip, Why: "n/a"})
	var buf bytes.Buffer
	if err := r.WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if last := lines[len(lines)-1]; last != "1 passed, 1 failed, 1 skipped" || len(lines) != 5 {
		t.Errorf("table:\n%s", buf.String())
	}
	buf.Reset()
	if err := r.WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil || back.Failed != 1 || len(back.Results) != 3 || back.Results[1].Why != "broken\nbadly" {
		t.Errorf("json: %s %v", buf.String(), err)
	}
	if r.OK() {
		t.Error("a report with a failure is OK")
	}
}
