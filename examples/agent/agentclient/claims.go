package agentclient

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// UnverifiedClaims decodes a JWT's claims WITHOUT checking its signature, for
// showing what a token says. A client must not base a decision on them: the
// resource server validates the token, and mandate answers introspection.
func UnverifiedClaims(token string) (map[string]any, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errors.New("agentclient: not a compact JWS")
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("agentclient: claims: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("agentclient: claims: %w", err)
	}
	return m, nil
}

// maxChain bounds the act nesting followed by ActorChain.
const maxChain = 32

// ActorChain flattens an RFC 8693 §4.1 "act" claim into client ids, the current
// actor first: {"sub":"B","act":{"sub":"A"}} gives [B A].
func ActorChain(claims map[string]any) []string {
	var out []string
	act, _ := claims["act"].(map[string]any)
	for i := 0; act != nil && i < maxChain; i++ {
		sub, _ := act["sub"].(string)
		out = append(out, sub)
		act, _ = act["act"].(map[string]any)
	}
	return out
}

// Short shows the first characters of a token and hides the rest, for output
// that must not leak a usable token.
func Short(token string) string {
	const n = 12
	if len(token) <= n {
		return strings.Repeat("•", len(token))
	}
	return token[:n] + "…"
}
