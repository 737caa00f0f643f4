package agentclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

// Registration describes an agent to register through mandate's admin API.
type Registration struct {
	ClientID string
	Name     string
	// Scopes are the most the agent may ever hold; Audiences the resources its
	// tokens may name.
	Scopes    []string
	Audiences []string
	// Key is the agent's key; only its public half is sent.
	Key jwk.Key
}

// APIError is an error answer of mandate's admin or user API.
type APIError struct {
	Status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// Error shows the code, the description and the status.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Description, e.Status)
}

// Register registers r as a private_key_jwt agent allowed to exchange tokens
// (POST /admin/v1/clients). When the client id is already registered it only
// replaces the registered keys with r.Key (PATCH), leaving scopes and audiences as
// an administrator may have set them; created reports which happened. adminKey
// is mandate's admin key; it is sent to mandate only.
func Register(ctx context.Context, hc *http.Client, issuer, adminKey string, r Registration) (created bool, err error) {
	if hc == nil {
		hc = &http.Client{Timeout: defaultHTTPTimeout}
	}
	jwks, err := PublicJWKS(r.Key)
	if err != nil {
		return false, err
	}
	base := strings.TrimRight(issuer, "/") + "/admin/v1/clients"
	body := map[string]any{
		"client_id": r.ClientID, "name": r.Name, "type": "agent",
		"token_endpoint_auth_method": "private_key_jwt", "jwks": jwks,
		"grant_types": []string{GrantTypeTokenExchange},
		"scopes":      r.Scopes, "audiences": r.Audiences,
	}
	err = adminCall(ctx, hc, http.MethodPost, base, adminKey, body)
	if err == nil {
		return true, nil
	}
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		return false, fmt.Errorf("agentclient: register %s: %w", r.ClientID, err)
	}
	if err := adminCall(ctx, hc, http.MethodPatch, base+"/"+url.PathEscape(r.ClientID), adminKey, map[string]any{"jwks": jwks}); err != nil {
		return false, fmt.Errorf("agentclient: update keys of %s: %w", r.ClientID, err)
	}
	return false, nil
}

func adminCall(ctx context.Context, hc *http.Client, method, u, adminKey string, body any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+adminKey)
	res, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return err
	}
	if res.StatusCode/100 == 2 {
		return nil
	}
	ae := &APIError{Status: res.StatusCode}
	if json.Unmarshal(raw, ae) != nil || ae.Code == "" {
		ae.Code, ae.Description = "unexpected_response", res.Status
	}
	return ae
}
