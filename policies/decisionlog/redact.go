package decisionlog

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
)

// redacted replaces a token found inside a string that is kept (a reason, an
// element of a list).
const redacted = "[redacted token]"

// The decision log must never hold a token. The broker gives it verified
// claims, not tokens, but a claim can itself carry one (an upstream IdP that
// embeds an id_token, a custom claim holding a bearer token), and a policy's
// reason can quote a claim. So every string is searched for a compact JWS or
// JWE: three or five base64url segments joined by dots whose first segment
// decodes to a JSON object with an "alg" member. Requiring a decodable header
// keeps host names, scope names and version numbers ("mail.example.com",
// "1.2.3") from being mistaken for tokens.

// findToken returns the bounds of the first compact JWS or JWE in s, or -1, -1.
func findToken(s string) (start, end int) {
	i := 0
	for i < len(s) {
		if !isTokenChar(s[i]) {
			i++
			continue
		}
		j := i
		for j < len(s) && isTokenChar(s[j]) {
			j++
		}
		if a, b := tokenInRun(s[i:j]); a >= 0 {
			return i + a, i + b
		}
		i = j
	}
	return -1, -1
}

// maxGlued is how many token characters may precede a header in a run: in
// a JSON document an escape glues up to five ("\u0001eyJ..." reads
// "u0001eyJ..."), and in text a token may follow a word without a space.
const maxGlued = 6

// tokenInRun looks for a token in a run of base64url characters and dots,
// without allocating: it runs over every string the log stores.
func tokenInRun(run string) (start, end int) {
	for segStart := 0; ; {
		segEnd := nextDot(run, segStart)
		if segEnd == len(run) {
			return -1, -1 // the last segment: no payload and signature after it
		}
		payloadEnd := nextDot(run, segEnd+1)
		if payloadEnd == len(run) {
			return -1, -1
		}
		seg := run[segStart:segEnd]
		for j := 0; j <= maxGlued && len(seg)-j >= 8; j++ {
			if seg[j] != 'e' {
				continue
			}
			hdr, ok := decodeHeader(seg[j:])
			if !ok {
				continue
			}
			end := nextDot(run, payloadEnd+1) // JWS: header.payload.signature
			if hdr.enc && end < len(run) {
				// JWE: header.key.iv.ciphertext.tag, when the run holds five segments.
				if tagStart := nextDot(run, end+1); tagStart < len(run) {
					end = nextDot(run, tagStart+1)
				}
			}
			return segStart + j, end
		}
		segStart = segEnd + 1
	}
}

// nextDot is the index of the first '.' in s at or after from, or len(s).
func nextDot(s string, from int) int {
	if i := strings.IndexByte(s[from:], '.'); i >= 0 {
		return from + i
	}
	return len(s)
}

type header struct{ enc bool }

// decodeHeader reports whether seg is the base64url of a JOSE header.
func decodeHeader(seg string) (header, bool) {
	raw, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return header{}, false
	}
	raw = bytes.TrimLeft(raw, " \t\r\n")
	if len(raw) == 0 || raw[0] != '{' {
		return header{}, false
	}
	var h map[string]json.RawMessage
	if json.Unmarshal(raw, &h) != nil {
		return header{}, false
	}
	if _, ok := h["alg"]; !ok {
		return header{}, false
	}
	_, enc := h["enc"]
	return header{enc: enc}, true
}

func isTokenChar(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}

// hasToken reports whether s holds a token anywhere.
func hasToken(s string) bool {
	a, _ := findToken(s)
	return a >= 0
}

// redactString replaces every token in s.
func redactString(s string) string {
	a, b := findToken(s)
	if a < 0 {
		return s
	}
	var out strings.Builder
	for a >= 0 {
		out.WriteString(s[:a])
		out.WriteString(redacted)
		s = s[b:]
		a, b = findToken(s)
	}
	out.WriteString(s)
	return out.String()
}

// redactList returns ss, or a copy with its tokens replaced.
func redactList(ss []string) []string {
	var out []string
	for i, s := range ss {
		if r := redactString(s); r != s {
			if out == nil {
				out = slices.Clone(ss)
			}
			out[i] = r
		}
	}
	if out == nil {
		return ss
	}
	return out
}

// sanitizeJSON returns doc with every token removed: an object member whose
// name or string value holds one is dropped (a claim carrying a token is
// stripped), an array element that holds one is replaced. JSON never escapes
// base64url characters or dots, so a document without a token in its bytes
// has none in its strings: the common case costs one scan.
func sanitizeJSON(doc []byte) ([]byte, error) {
	if !hasToken(string(doc)) {
		return doc, nil
	}
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return json.Marshal(sanitizeValue(v))
}

func sanitizeValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			if hasToken(k) {
				delete(x, k)
				continue
			}
			if s, ok := val.(string); ok && hasToken(s) {
				delete(x, k)
				continue
			}
			x[k] = sanitizeValue(val)
		}
		return x
	case []any:
		for i, val := range x {
			if s, ok := val.(string); ok {
				x[i] = redactString(s)
				continue
			}
			x[i] = sanitizeValue(val)
		}
		return x
	case string:
		return redactString(x)
	}
	return v
}
