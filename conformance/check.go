package conformance

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Check is one assertion on a JSON document, written "PATH OP [VALUE]":
//
//	act.sub == {{client:agent_a}}     equal (strings, numbers, booleans; JSON for objects)
//	act.act.sub != {{client:agent_c}}
//	exp <= $t1.exp                    numbers: <, <=, >, >=; $STEP.PATH is a claim of the
//	                                  token an earlier step issued, $self of the token this
//	                                  step issued, $subject / $actor of the tokens sent
//	scope subset mail:read calendar:read    as sets (space-separated or arrays); also ⊆,
//	                                  superset and ⊇
//	aud contains https://api.example.com/mail   one element (array or space-separated)
//	scope excludes mail:write         (also true when scope is absent)
//	error_description matches (?i)impersonat    regular expression
//	expires_in is number              string, number, integer, bool, object, array, jwt, uri
//	act exists / may_act absent
//	keys.*.kid exists                 "*" checks every element of an array (there must be one)
//
// PATH is dotted; "." is the whole document and a numeric segment indexes an array.
type Check struct {
	Src  string
	Path string
	Op   string
	RHS  string
}

var checkOps = map[string]string{
	"exists": "exists", "absent": "absent", "==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">=",
	"subset": "subset", "⊆": "subset", "superset": "superset", "⊇": "superset", "contains": "contains",
	"excludes": "excludes", "matches": "matches", "is": "is",
}

var checkTypes = []string{"string", "number", "integer", "bool", "object", "array", "null", "jwt", "uri"}

// ParseCheck parses one check.
func ParseCheck(src string) (Check, error) {
	f := strings.Fields(src)
	if len(f) < 2 {
		return Check{}, fmt.Errorf("check %q: want PATH OP [VALUE]", src)
	}
	op, ok := checkOps[f[1]]
	if !ok {
		return Check{}, fmt.Errorf("check %q: unknown operator %q", src, f[1])
	}
	c := Check{Src: src, Path: f[0], Op: op}
	// The value is the rest of the line as written, so it may hold spaces.
	rest := strings.TrimSpace(src)
	rest = strings.TrimSpace(strings.TrimPrefix(rest, f[0]))
	rest = strings.TrimSpace(strings.TrimPrefix(rest, f[1]))
	c.RHS = rest
	switch op {
	case "exists", "absent":
		if c.RHS != "" {
			return Check{}, fmt.Errorf("check %q: %s takes no value", src, op)
		}
	case "is":
		if !slices.Contains(checkTypes, c.RHS) {
			return Check{}, fmt.Errorf("check %q: type %q is not one of %s", src, c.RHS, strings.Join(checkTypes, ", "))
		}
	case "matches":
		if _, err := regexp.Compile(c.RHS); err != nil {
			return Check{}, fmt.Errorf("check %q: %w", src, err)
		}
	default:
		if c.RHS == "" {
			return Check{}, fmt.Errorf("check %q: %s needs a value", src, op)
		}
	}
	return c, nil
}

// found is one value a path led to.
type found struct {
	v  any
	ok bool
	at string
}

// lookup follows a dotted path; "*" fans out over an array or object.
func lookup(doc any, path string) []found {
	if path == "." || path == "" {
		return []found{{v: doc, ok: true, at: "."}}
	}
	cur := []found{{v: doc, ok: true}}
	for _, seg := range strings.Split(path, ".") {
		var next []found
		for _, f := range cur {
			at := strings.TrimPrefix(f.at+"."+seg, ".")
			if !f.ok {
				next = append(next, found{at: at})
				continue
			}
			switch v := f.v.(type) {
			case map[string]any:
				if seg == "*" {
					keys := make([]string, 0, len(v))
					for k := range v {
						keys = append(keys, k)
					}
					slices.Sort(keys)
					for _, k := range keys {
						next = append(next, found{v: v[k], ok: true, at: strings.TrimPrefix(f.at+"."+k, ".")})
					}
					continue
				}
				x, ok := v[seg]
				next = append(next, found{v: x, ok: ok, at: at})
			case []any:
				if seg == "*" {
					for i, x := range v {
						next = append(next, found{v: x, ok: true, at: fmt.Sprintf("%s.%d", f.at, i)})
					}
					continue
				}
				i, err := strconv.Atoi(seg)
				if err != nil || i < 0 || i >= len(v) {
					next = append(next, found{at: at})
					continue
				}
				next = append(next, found{v: v[i], ok: true, at: at})
			default:
				next = append(next, found{at: at})
			}
		}
		cur = next
	}
	return cur
}

// Eval runs the check on doc. rhs is the value to compare with: a string as
// written (placeholders already expanded) unless the value was a $reference,
// in which case it is the referenced JSON value and isRef is true.
func (c Check) Eval(doc any, rhs any, isRef bool) error {
	fs := lookup(doc, c.Path)
	if len(fs) == 0 {
		if c.Op == "absent" {
			return nil
		}
		return fmt.Errorf("%s: no element at %s", c.Src, c.Path)
	}
	for _, f := range fs {
		if err := c.evalOne(f, rhs, isRef); err != nil {
			return err
		}
	}
	return nil
}

func (c Check) evalOne(f found, rhs any, isRef bool) error {
	present := f.ok && f.v != nil
	got := func() string { return show(f.v, f.ok) }
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: %s is %s, %s", c.Src, f.at, got(), fmt.Sprintf(format, args...))
	}
	switch c.Op {
	case "exists":
		if !present {
			return fmt.Errorf("%s: %s is absent", c.Src, f.at)
		}
		return nil
	case "absent":
		if present {
			return fail("want absent")
		}
		return nil
	}
	if !f.ok {
		if c.Op == "excludes" {
			return nil // an absent set excludes everything
		}
		return fmt.Errorf("%s: %s is absent", c.Src, f.at)
	}
	switch c.Op {
	case "==", "!=":
		eq, err := equalJSON(f.v, rhs, isRef)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Src, err)
		}
		if eq != (c.Op == "==") {
			return fail("want %s %s", c.Op, show(rhs, true))
		}
	case "<", "<=", ">", ">=":
		a, ok := f.v.(float64)
		if !ok {
			return fail("not a number")
		}
		b, err := number(rhs)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Src, err)
		}
		ok = map[string]bool{"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[c.Op]
		if !ok {
			return fail("want %s %s", c.Op, strconv.FormatFloat(b, 'f', -1, 64))
		}
	case "subset", "superset":
		a, err := set(f.v)
		if err != nil {
			return fail("%v", err)
		}
		b, err := set(rhs)
		if err != nil {
			return fmt.Errorf("%s: value: %w", c.Src, err)
		}
		small, big := a, b
		if c.Op == "superset" {
			small, big = b, a
		}
		for _, x := range small {
			if !slices.Contains(big, x) {
				return fail("want %s of %s (%q is not in both)", c.Op, show(rhs, true), x)
			}
		}
	case "contains", "excludes":
		a, err := set(f.v)
		if err != nil {
			return fail("%v", err)
		}
		want, ok := rhs.(string)
		if !ok {
			return fmt.Errorf("%s: %s needs a string value", c.Src, c.Op)
		}
		if slices.Contains(a, want) != (c.Op == "contains") {
			return fail("want it to %s %q", strings.TrimSuffix(c.Op, "s"), want)
		}
	case "matches":
		s, ok := f.v.(string)
		if !ok {
			return fail("not a string")
		}
		pat, _ := rhs.(string)
		if !regexp.MustCompile(pat).MatchString(s) {
			return fail("want a match of /%s/", pat)
		}
	case "is":
		if !isType(f.v, c.RHS) {
			return fail("want a value of type %s", c.RHS)
		}
	}
	return nil
}

func isType(v any, typ string) bool {
	switch typ {
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(float64)
		return ok
	case "integer":
		n, ok := v.(float64)
		return ok && n == math.Trunc(n)
	case "bool":
		_, ok := v.(bool)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	case "array":
		_, ok := v.([]any)
		return ok
	case "null":
		return v == nil
	case "jwt":
		s, ok := v.(string)
		if !ok {
			return false
		}
		parts := strings.Split(s, ".")
		if len(parts) != 3 {
			return false
		}
		for _, p := range parts[:2] {
			if _, err := b64.DecodeString(p); err != nil || p == "" {
				return false
			}
		}
		return true
	case "uri":
		s, ok := v.(string)
		if !ok {
			return false
		}
		u, err := url.Parse(s)
		return err == nil && u.IsAbs()
	}
	return false
}

// equalJSON compares a JSON value with a written value (typed by the JSON
// value) or with a referenced JSON value.
func equalJSON(v, rhs any, isRef bool) (bool, error) {
	if !isRef {
		s, _ := rhs.(string)
		switch x := v.(type) {
		case string:
			return x == s, nil
		case bool:
			b, err := strconv.ParseBool(s)
			if err != nil {
				return false, fmt.Errorf("%q is not a boolean", s)
			}
			return x == b, nil
		case float64:
			n, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return false, nil
			}
			return x == n, nil
		case nil:
			return s == "null", nil
		default:
			var want any
			if err := json.Unmarshal([]byte(s), &want); err != nil {
				return false, fmt.Errorf("%q is not JSON, to compare with an object or array", s)
			}
			rhs = want
		}
	}
	a, _ := json.Marshal(v)
	b, _ := json.Marshal(rhs)
	return string(a) == string(b), nil
}

func number(v any) (float64, error) {
	switch x := v.(type) {
	case float64:
		return x, nil
	case string:
		n, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a number", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%s is not a number", show(v, v != nil))
}

// set reads a space-separated string or an array of strings.
func set(v any) ([]string, error) {
	switch x := v.(type) {
	case string:
		return strings.Fields(x), nil
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("array holds a non-string %v", e)
			}
			out = append(out, s)
		}
		return out, nil
	case nil:
		return nil, nil
	}
	return nil, fmt.Errorf("not a string or an array of strings")
}

func show(v any, ok bool) string {
	if !ok {
		return "absent"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return truncate(string(b), 200)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
