package policies

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// ReservedClaims returns the claim names a decision's claims may not set:
// iss, sub, aud, exp, iat, nbf, jti, act, scope, client_id, may_act, and cnf
// (a policy must not bind the token to a key of its choosing). The broker
// alone sets them; a policy that tries has a bug or is forging a token, so
// its decision is refused.
func ReservedClaims() []string {
	return []string{"act", "aud", "client_id", "cnf", "exp", "iat", "iss", "jti", "may_act", "nbf", "scope", "sub"}
}

// IsReservedClaim reports whether name is one of ReservedClaims.
func IsReservedClaim(name string) bool {
	switch name {
	case "act", "aud", "client_id", "cnf", "exp", "iat", "iss", "jti", "may_act", "nbf", "scope", "sub":
		return true
	}
	return false
}

// maxLifetimeSeconds is the largest lifetime a time.Duration can hold.
const maxLifetimeSeconds = math.MaxInt64 / int64(time.Second)

// parseDecision reads the value of the entry point. It is strict: an unknown
// key, a missing required key or a value of the wrong type is an error, since
// a decision the broker half understands must not become a token.
func parseDecision(v ast.Value) (Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fmt.Errorf("%w: decision is %s, want an object", ErrInvalidDecision, ast.ValueName(v))
	}
	var (
		d                   Decision
		haveAllow, haveRsns bool
	)
	for _, k := range obj.Keys() {
		key, ok := k.Value.(ast.String)
		if !ok {
			return Decision{}, fmt.Errorf("%w: decision has a non-string key %v", ErrInvalidDecision, k)
		}
		val := obj.Get(k).Value
		switch key {
		case "allow":
			b, ok := val.(ast.Boolean)
			if !ok {
				return Decision{}, fmt.Errorf("%w: allow is %s, want a boolean", ErrInvalidDecision, ast.ValueName(val))
			}
			d.Allow, haveAllow = bool(b), true
		case "reasons":
			rs, err := stringList(val)
			if err != nil {
				return Decision{}, fmt.Errorf("%w: reasons: %w", ErrInvalidDecision, err)
			}
			d.Reasons, haveRsns = rs, true
		case "scopes":
			ss, err := stringList(val)
			if err != nil {
				return Decision{}, fmt.Errorf("%w: scopes: %w", ErrInvalidDecision, err)
			}
			for _, s := range ss {
				// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
				if !validScopeToken(s) {
					return Decision{}, fmt.Errorf("%w: scopes: %q is not a valid scope token", ErrInvalidDecision, s)
				}
			}
			d.Scopes = ss
		case "max_lifetime_seconds":
			secs, err := lifetimeSeconds(val)
			if err != nil {
				return Decision{}, fmt.Errorf("%w: max_lifetime_seconds: %w", ErrInvalidDecision, err)
			}
			d.MaxLifetime = time.Duration(secs) * time.Second
		case "claims":
			claims, err := claimsValue(val)
			if err != nil {
				return Decision{}, fmt.Errorf("%w: claims: %w", ErrInvalidDecision, err)
			}
			d.Claims = claims
		default:
			return Decision{}, fmt.Errorf("%w: unknown key %q (want allow, reasons, scopes, max_lifetime_seconds, claims)", ErrInvalidDecision, string(key))
		}
	}
	if !haveAllow {
		return Decision{}, fmt.Errorf("%w: allow is missing", ErrInvalidDecision)
	}
	if !haveRsns {
		return Decision{}, fmt.Errorf("%w: reasons is missing", ErrInvalidDecision)
	}
	return d, nil
}

// stringList accepts an array or a set of strings; Rego policies build either.
func stringList(v ast.Value) ([]string, error) {
	out := []string{}
	var bad error
	add := func(t *ast.Term) {
		if bad != nil {
			return
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			bad = fmt.Errorf("element %v is %s, want a string", t, ast.ValueName(t.Value))
			return
		}
		out = append(out, string(s))
	}
	switch x := v.(type) {
	case *ast.Array:
		x.Foreach(add)
	case ast.Set:
		x.Foreach(add)
	default:
		return nil, fmt.Errorf("is %s, want an array of strings", ast.ValueName(v))
	}
	if bad != nil {
		return nil, bad
	}
	return out, nil
}

func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5c || c > 0x7e {
			return false
		}
	}
	return true
}

// lifetimeSeconds accepts a whole number of seconds, at least 1. Zero is
// refused rather than read as "no cap": a policy that means no cap leaves
// the key out.
func lifetimeSeconds(v ast.Value) (int64, error) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, fmt.Errorf("is %s, want a number", ast.ValueName(v))
	}
	secs, ok := n.Int64()
	if !ok {
		f, ok := n.Float64()
		if !ok || f != math.Trunc(f) || f > float64(maxLifetimeSeconds) || f < math.MinInt64 {
			return 0, fmt.Errorf("%v is not a whole number of seconds in range", n)
		}
		secs = int64(f)
	}
	if secs < 1 {
		return 0, fmt.Errorf("%d must be at least 1", secs)
	}
	if secs > maxLifetimeSeconds {
		return 0, fmt.Errorf("%d is too large", secs)
	}
	return secs, nil
}

func claimsValue(v ast.Value) (map[string]any, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return nil, fmt.Errorf("is %s, want an object", ast.ValueName(v))
	}
	var err error
	obj.Foreach(func(k, _ *ast.Term) {
		if err != nil {
			return
		}
		s, ok := k.Value.(ast.String)
		switch {
		case !ok:
			err = fmt.Errorf("key %v is %s, want a string", k, ast.ValueName(k.Value))
		case strings.TrimSpace(string(s)) == "":
			err = fmt.Errorf("empty claim name")
		case IsReservedClaim(string(s)):
			err = fmt.Errorf("%q is a reserved claim that only the broker sets", string(s))
		}
	})
	if err != nil {
		return nil, err
	}
	j, err := ast.JSON(obj)
	if err != nil {
		return nil, err
	}
	m, ok := j.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("is %T, want an object", j)
	}
	return m, nil
}
