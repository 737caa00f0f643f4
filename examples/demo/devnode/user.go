package devnode

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// What a user does, over HTTP, as the user's own app would: log in at the dev
// issuer, grant an agent, revoke the grant.

var httpClient = &http.Client{Timeout: 15 * time.Second}

// UserToken mints a user token at the dev upstream issuer (what
// `mandate token user --sub SUB --scope SCOPE` does). Its audience is mandate.
func (n *Node) UserToken(ctx context.Context, sub, scope string) (string, error) {
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(ctx, http.MethodPost, n.URL+"/admin/v1/dev/user-token", n.AdminKey,
		map[string]any{"sub": sub, "scope": scope}, http.StatusOK, &out); err != nil {
		return "", fmt.Errorf("devnode: user token for %s: %w", sub, err)
	}
	return out.AccessToken, nil
}

// Grant is a user's delegation grant to a client (see docs/grants.md).
type Grant struct {
	ClientID         string   `json:"client_id"`
	Scopes           []string `json:"scopes"`
	Resources        []string `json:"resources"`
	AllowedSubAgents []string `json:"allowed_sub_agents"`
	ExpiresAt        string   `json:"expires_at"`
}

// CreateGrant creates g as the user whose token is userToken (POST /v1/grants)
// and returns the grant id. An empty ExpiresAt means one day from now.
func (n *Node) CreateGrant(ctx context.Context, userToken string, g Grant) (string, error) {
	if g.ExpiresAt == "" {
		g.ExpiresAt = time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	}
	if g.AllowedSubAgents == nil {
		g.AllowedSubAgents = []string{}
	}
	var out struct {
		GrantID string `json:"grant_id"`
	}
	if err := call(ctx, http.MethodPost, n.URL+"/v1/grants", userToken, g, http.StatusCreated, &out); err != nil {
		return "", fmt.Errorf("devnode: grant %s: %w", g.ClientID, err)
	}
	return out.GrantID, nil
}

// RevokeGrant revokes a grant as the user whose token is userToken
// (DELETE /v1/grants/{id}); every token issued under it dies with it.
func (n *Node) RevokeGrant(ctx context.Context, userToken, grantID string) error {
	if err := call(ctx, http.MethodDelete, n.URL+"/v1/grants/"+url.PathEscape(grantID), userToken, nil, http.StatusNoContent, nil); err != nil {
		return fmt.Errorf("devnode: revoke grant %s: %w", grantID, err)
	}
	return nil
}

func call(ctx context.Context, method, u, bearer string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		var e struct {
			Code        string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(raw, &e)
		return fmt.Errorf("%s %s: HTTP %d %s: %s", method, req.URL.Path, res.StatusCode, e.Code, e.Description)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, req.URL.Path, err)
		}
	}
	return nil
}
