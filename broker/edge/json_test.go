package edge

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

var jsonSeeds = []string{
	`{}`,
	` { "a" : 1 , "b":[true,false,null,-0,0.5e-3,1E+2], "c":{"d":"e"} } `,
	`{"iss":"https://broker.example.com","aud":["a","b"],"exp":1700000000,"act":{"sub":"b","act":{"sub":"a"}}}`,
	`{"s":"\"\\\/\b\f\n\r\t\u00e9\u20AC\ud83d\ude00"}`,
	`{"lone":"\ud800","lone2":"\ud800x","pair-bad":"\ud800\u0041","low":"\udc00"}`,
	"{\"utf8\":\"h\xc3\xa9llo \xff\xfe bad\"}",
	`{"dup":1,"dup":2}`,
	`{"big":1e400}`, `{"n":01}`, `{"n":1.}`, `{"n":-}`, `{"n":.5}`, `{"n":1e}`,
	`{"a":1,}`, `{"a" 1}`, `{a:1}`, `{"a":tru}`, `{"a":nul}`, `[1]`, `null`, `"s"`, `{"a":1}x`,
	"{\"ctl\":\"a\x01b\"}", `{"esc":"\x"}`, `{"u":"\u12G4"}`, `{"deep":[[[[[[[[[[]]]]]]]]]]}`, `{`, ``,
}

func TestParseJSONObject(t *testing.T) {
	for _, in := range jsonSeeds {
		compareWithEncodingJSON(t, []byte(in))
	}
	deep := strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth)
	compareWithEncodingJSON(t, []byte(`{"x":`+deep+`}`))
}

// FuzzParseJSONObject is a differential fuzzer: the claims parser must agree with
// encoding/json on every input, accepting the same documents and producing the same values.
func FuzzParseJSONObject(f *testing.F) {
	for _, in := range jsonSeeds {
		f.Add([]byte(in))
	}
	f.Fuzz(compareWithEncodingJSON)
}

func compareWithEncodingJSON(t *testing.T, in []byte) {
	t.Helper()
	got, gotErr := parseJSONObject(in)
	var want map[string]any
	wantErr := json.Unmarshal(in, &want)
	gotOK, wantOK := gotErr == nil, wantErr == nil && want != nil
	if gotOK != wantOK {
		t.Fatalf("input %q: parseJSONObject error %v, encoding/json error %v (nil map: %v)", in, gotErr, wantErr, want == nil)
	}
	if gotOK && !reflect.DeepEqual(got, want) {
		t.Fatalf("input %q:\n got %#v\nwant %#v", in, got, want)
	}
}
