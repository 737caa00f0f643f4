package policies

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
)

// TestInputValueMatchesJSON checks that the input a policy sees (built as an
// ast.Value directly) is the input's JSON form, which is what decision logs
// record and what `opa eval --input` would read.
func TestInputValueMatchesJSON(t *testing.T) {
	full := aliceInput()
	full.Chain = append(full.Chain, ChainLink{Sub: "agent-root", Iss: "https://mandate.example.com"})
	full.Grant.MaxDepth, full.Grant.MaxLifetimeSeconds, full.Grant.ExpiresAt = 2, 3600, 1893456000
	full.Subject.Depth, full.Subject.GrantID, full.Subject.ClientID = 1, "grt_0", "agent-root"
	full.Subject.Claims["nested"] = map[string]any{"list": []any{1.5, "x", nil, false}}
	full.Client.FirstParty, full.Client.MayImpersonate = true, true
	full.Meta.Unix = 1<<40 + 7 // not an interned number

	tests := map[string]*Input{
		"full":    full,
		"minimal": {Version: InputVersion},
		"empty actor": {
			Version: InputVersion,
			Actor:   &ActorInput{},
			Grant:   &GrantInput{},
		},
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := in.astValue()
			if err != nil {
				t.Fatalf("astValue: %v", err)
			}
			bs, err := json.Marshal(in)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			var doc any
			if err := util.NewJSONDecoder(bytes.NewReader(bs)).Decode(&doc); err != nil {
				t.Fatal(err)
			}
			want, err := ast.InterfaceToValue(doc)
			if err != nil {
				t.Fatal(err)
			}
			if got.Compare(want) != 0 {
				t.Errorf("input value\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestInputJSONHasNoNulls(t *testing.T) {
	bs, err := json.Marshal(Input{Version: InputVersion, Actor: &ActorInput{}, Grant: &GrantInput{}})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(bs, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			t.Errorf("%s is null", path)
		case map[string]any:
			for k, e := range v {
				walk(path+"."+k, e)
			}
		case []any:
			for _, e := range v {
				walk(path+"[]", e)
			}
		}
	}
	walk("input", doc)

	bs, err = json.Marshal(Input{Version: InputVersion})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bs, []byte(`"grant":null`)) || bytes.Contains(bs, []byte(`"actor"`)) {
		t.Errorf("JSON %s: want grant null and no actor when there are none", bs)
	}
}
