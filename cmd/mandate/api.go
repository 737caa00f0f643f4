package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

// apiError is an error answer of the server, shown as its error_description.
type apiError struct {
	Status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
	// Body is the whole answer, for callers that read more of it.
	Body []byte `json:"-"`
}

func (e *apiError) Error() string {
	if e.Description != "" {
		return fmt.Sprintf("%s: %s (HTTP %d)", e.Code, e.Description, e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d)", e.Code, e.Status)
}

// adminCall calls the admin API with the admin key and decodes the JSON answer into out.
func (g *globals) adminCall(method, path string, body, out any) error {
	if g.adminKey == "" {
		return errors.New("no admin key: set MANDATE_ADMIN_KEY or pass --admin-key")
	}
	return g.call(method, "/admin/v1"+path, "Bearer "+g.adminKey, body, out)
}

func (g *globals) call(method, path, auth string, body, out any) error {
	return g.callCtx(context.Background(), method, path, auth, body, out)
}

func (g *globals) callCtx(ctx context.Context, method, path, auth string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(g.url, "/")+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	return do(req, out)
}

// form posts an OAuth form (token, introspect, revoke endpoints).
func (g *globals) form(path string, vals url.Values, clientID, secret string, out any) error {
	req, err := http.NewRequest(http.MethodPost, strings.TrimRight(g.url, "/")+path, strings.NewReader(vals.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if clientID != "" {
		req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(secret))
	}
	return do(req, out)
}

func do(req *http.Request, out any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach mandate at %s: %w", req.URL.Host, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20)) // policy bundles are the largest answers
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		e := &apiError{Status: resp.StatusCode, Body: b}
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code = http.StatusText(resp.StatusCode)
		}
		return e
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("unexpected answer from server: %w", err)
		}
	}
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
