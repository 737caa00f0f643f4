package conformance

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestEmbeddedCases(t *testing.T) {
	cases, err := Cases()
	if err != nil {
		t.Fatal(err)
	}
	perGroup := map[string]int{}
	for _, c := range cases {
		perGroup[c.Group]++
		if c.Description == "" {
			t.Errorf("%s: no description", c.Name)
		}
		if len(c.Steps) == 0 {
			t.Errorf("%s: no steps", c.Name)
		}
	}
	for _, g := range Groups {
		if perGroup[g] == 0 {
			t.Errorf("group %s has no case", g)
		}
	}
	t.Logf("%d cases: %v", len(cases), perGroup)
}

func TestLoadCasesRefusesMistakes(t *testing.T) {
	const ok = `request: {endpoint: token, client: agent_a, form: {grant_type: client_credentials}}`
	bad := map[string]string{
		"unknown group":     "group: rfc0000\ncases: [{name: a, spec: x, " + ok + "}]",
		"unknown key":       "group: rfc8693\ncases: [{name: a, spec: x, colour: red, " + ok + "}]",
		"no spec":           "group: rfc8693\ncases: [{name: a, " + ok + "}]",
		"bad name":          "group: rfc8693\ncases: [{name: A_b, spec: x, " + ok + "}]",
		"no request":        "group: rfc8693\ncases: [{name: a, spec: x}]",
		"unknown endpoint":  "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: authorize}}]",
		"unknown role":      "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, client: agent_z}}]",
		"unknown auth":      "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, auth: magic}}]",
		"unknown feature":   "group: rfc8693\ncases: [{name: a, spec: x, requires: [telepathy], " + ok + "}]",
		"bad placeholder":   "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, form: {x: '{{nope}}'}}}]",
		"bad @role":         "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, form: {x: '{{user_token:@agent_z:x}}'}}}]",
		"bad bad-token":     "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, form: {x: '{{bad_token:nice}}'}}}]",
		"forward reference": "group: rfc8693\ncases: [{name: a, spec: x, request: {endpoint: token, form: {x: '{{token_from:later}}'}}}]",
		"bad check":         "group: rfc8693\ncases: [{name: a, spec: x, " + ok + ", expect: {claims: ['sub ~ x']}}]",
		"bad reference":     "group: rfc8693\ncases: [{name: a, spec: x, " + ok + ", expect: {claims: ['exp <= $t9.exp']}}]",
		"reserved step id":  "group: rfc8693\ncases: [{name: a, spec: x, steps: [{id: subject, " + ok + "}]}]",
		"duplicate name":    "group: rfc8693\ncases: [{name: a, spec: x, " + ok + "}, {name: a, spec: x, " + ok + "}]",
		"unknown action":    "group: rfc8693\ncases: [{name: a, spec: x, steps: [{action: {kind: delete_user, user: u, client: agent_a}}]}]",
	}
	for name, src := range bad {
		t.Run(name, func(t *testing.T) {
			_, err := LoadCases(fstest.MapFS{"x.yaml": {Data: []byte(src)}})
			if err == nil {
				t.Fatalf("got no error for %s", src)
			}
			if !strings.Contains(err.Error(), "x.yaml") {
				t.Errorf("the error %q does not name the file", err)
			}
		})
	}
}

func TestCaseRoles(t *testing.T) {
	cases, err := LoadCases(fstest.MapFS{"x.yaml": {Data: []byte(`
group: rfc8693
cases:
  - name: a
    spec: x
    requires: [role:agent_d]
    request:
      endpoint: token
      client: agent_a
      form: {a: "{{client:agent_b}}", b: "{{actor_token:agent_c}}", c: "{{bad_token:expired:@app}}", d: "{{forged_token:alg_none:pkjwt:impersonator}}"}
    expect: {claims: ["act.sub == {{client:unvetted}}"]}
`)}})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(cases[0].roles(), " ")
	for _, want := range KnownRoles {
		if !strings.Contains(got, want) {
			t.Errorf("roles %q lack %s", got, want)
		}
	}
}
