package conformance

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// maxBody bounds every response the suite reads.
const maxBody = 1 << 20

// Token-exchange vocabulary (RFC 8693 §3).
const (
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	assertionType        = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// Filter selects cases; the zero Filter selects all.
type Filter struct {
	// Groups keeps only these groups.
	Groups []string
	// Match keeps only cases whose name it matches.
	Match *regexp.Regexp
}

func (f Filter) keep(c Case) bool {
	if len(f.Groups) > 0 && !slices.Contains(f.Groups, c.Group) {
		return false
	}
	return f.Match == nil || f.Match.MatchString(c.Name)
}

// Run runs the embedded cases against the target, with idp as the upstream
// issuer the target trusts. Cases run one after another, in group order.
func Run(ctx context.Context, t *Target, idp *IdP, f Filter) Report {
	cases, err := Cases()
	if err != nil {
		return failedReport(t, "load-cases", err)
	}
	return RunCases(ctx, t, idp, cases, f)
}

// RunCases runs the given cases (see LoadCases) against the target.
func RunCases(ctx context.Context, t *Target, idp *IdP, cases []Case, f Filter) Report {
	r := &runner{t: t, idp: idp, hc: newHTTPClient()}
	if t == nil || idp == nil {
		return failedReport(t, "target", errors.New("a target and an IdP are required"))
	}
	if err := t.Resolve(ctx, r.hc); err != nil {
		return failedReport(t, "target", err)
	}
	rep := Report{Target: t.Issuer}
	for _, c := range cases {
		if !f.keep(c) {
			continue
		}
		if ctx.Err() != nil {
			rep.add(Result{Name: c.Name, Group: c.Group, Spec: c.Spec, Status: Skip, Why: "interrupted: " + ctx.Err().Error()})
			continue
		}
		rep.add(r.runCase(ctx, c))
	}
	return rep
}

func failedReport(t *Target, name string, err error) Report {
	rep := Report{}
	if t != nil {
		rep.Target = t.Issuer
	}
	rep.add(Result{Name: name, Group: "setup", Status: Fail, Why: err.Error()})
	return rep
}

func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 15 * time.Second,
		// The suite looks at what the server answers, never where it redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

type runner struct {
	t   *Target
	idp *IdP
	hc  *http.Client

	jwksRaw []byte
	jwksSet jwk.Set
}

// exchange is one request sent and its answer.
type exchange struct {
	status    int
	header    http.Header
	raw       string
	body      any // decoded JSON, nil if not JSON
	token     string
	claims    map[string]any
	tokHeader map[string]any
	form      url.Values
	assertion string
}

type caseRun struct {
	r     *runner
	c     *Case
	steps map[string]*exchange
	cur   *exchange // the step being run, for $subject and $actor
}

func (r *runner) runCase(ctx context.Context, c Case) Result {
	res := Result{Name: c.Name, Group: c.Group, Spec: c.Spec}
	if why := r.skipReason(c); why != "" {
		res.Status, res.Why = Skip, why
		return res
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cr := &caseRun{r: r, c: &c, steps: map[string]*exchange{}}
	for _, s := range c.Steps {
		if err := cr.step(ctx, s); err != nil {
			res.Status = Fail
			res.Why = err.Error()
			if len(c.Steps) > 1 {
				res.Why = "step " + s.ID + ": " + res.Why
			}
			return res
		}
	}
	res.Status = Pass
	return res
}

// skipReason says why the target cannot run the case, or "".
func (r *runner) skipReason(c Case) string {
	for _, req := range c.Requires {
		if strings.HasPrefix(req, "role:") {
			continue
		}
		if req == FeatureMandate && r.t.Mandate == nil {
			return "mandate-specific: runs in mandate setup mode (--mandate-url, --admin-key), with the suite's clients, grants and the default policy"
		}
		if !r.t.HasFeature(req) {
			return "needs feature " + req + ", which the target does not declare"
		}
	}
	for _, role := range c.roles() {
		if r.t.Clients[role] == nil {
			return "the target has no client for role " + role
		}
	}
	for _, s := range c.Steps {
		if s.Action != nil && r.t.Mandate == nil {
			return "needs mandate setup mode for " + s.Action.Kind
		}
		if s.Request == nil {
			continue
		}
		switch s.Request.Endpoint {
		case "introspection":
			if r.t.IntrospectionEndpoint == "" {
				return "the target has no introspection endpoint"
			}
		case "revocation":
			if r.t.RevocationEndpoint == "" {
				return "the target has no revocation endpoint"
			}
		case "jwks":
			if r.t.JWKSURI == "" {
				return "the target has no jwks_uri"
			}
		}
	}
	return ""
}

func (cr *caseRun) step(ctx context.Context, s Step) error {
	if s.Action != nil {
		return cr.action(ctx, s)
	}
	ex, err := cr.send(ctx, s)
	if err != nil {
		return err
	}
	cr.steps[s.ID] = ex
	if err := cr.r.autoChecks(s.Request, ex); err != nil {
		return fmt.Errorf("%w; got %s", err, evidence(ex))
	}
	e := s.Expect
	if e == nil {
		e = &Expect{Status: IntList{http.StatusOK}}
	}
	if err := cr.expect(ctx, e, ex); err != nil {
		return fmt.Errorf("%w; got %s", err, evidence(ex))
	}
	return nil
}

// send builds, authenticates and sends a step's request.
func (cr *caseRun) send(ctx context.Context, s Step) (*exchange, error) {
	req := s.Request
	r := cr.r
	ex := &exchange{form: url.Values{}}
	cr.cur = ex
	keys := make([]string, 0, len(req.Form))
	for k := range req.Form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range req.Form[k] {
			x, err := cr.expand(ctx, v)
			if err != nil {
				return nil, fmt.Errorf("form %s: %w", k, err)
			}
			ex.form.Add(k, x)
		}
	}
	var target, method string
	switch req.Endpoint {
	case "token":
		target, method = r.t.TokenEndpoint, http.MethodPost
	case "introspection":
		target, method = r.t.IntrospectionEndpoint, http.MethodPost
	case "revocation":
		target, method = r.t.RevocationEndpoint, http.MethodPost
	case "metadata":
		target, method = r.t.MetadataURL, http.MethodGet
	case "jwks":
		target, method = r.t.JWKSURI, http.MethodGet
	}
	if req.Method != "" {
		method = req.Method
	}
	hdr := http.Header{}
	if err := cr.authenticate(ctx, req, ex, hdr); err != nil {
		return nil, err
	}
	if len(req.Query) > 0 {
		u, err := url.Parse(target)
		if err != nil {
			return nil, fmt.Errorf("endpoint %q: %w", target, err)
		}
		q := u.Query()
		for k, v := range req.Query {
			x, err := cr.expand(ctx, v)
			if err != nil {
				return nil, fmt.Errorf("query %s: %w", k, err)
			}
			q.Set(k, x)
		}
		u.RawQuery = q.Encode()
		target = u.String()
	}
	var body io.Reader
	if method != http.MethodGet || req.Body != nil {
		text := ex.form.Encode()
		if req.Body != nil {
			x, err := cr.expand(ctx, *req.Body)
			if err != nil {
				return nil, fmt.Errorf("body: %w", err)
			}
			text = x
		}
		body = strings.NewReader(text)
		ct := req.ContentType
		if ct == "" {
			ct = "application/x-www-form-urlencoded"
		}
		hdr.Set("Content-Type", ct)
	} else if len(ex.form) > 0 {
		// A GET carries its form in the query, as a confused client would.
		u, _ := url.Parse(target)
		q := u.Query()
		for k, vs := range ex.form {
			for _, v := range vs {
				q.Add(k, v)
			}
		}
		u.RawQuery = q.Encode()
		target = u.String()
	}
	hreq, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	hreq.Header = hdr
	hreq.Header.Set("Accept", "application/json")
	if err := r.do(hreq, ex); err != nil {
		return nil, err
	}
	return ex, nil
}

func (r *runner) do(req *http.Request, ex *exchange) error {
	res, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Redacted(), err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, maxBody))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", req.Method, req.URL.Redacted(), err)
	}
	ex.status, ex.header, ex.raw = res.StatusCode, res.Header, string(b)
	var doc any
	if json.Unmarshal(b, &doc) == nil {
		ex.body = doc
	}
	if m, ok := ex.body.(map[string]any); ok {
		if tok, ok := m["access_token"].(string); ok {
			ex.token = tok
			ex.tokHeader, ex.claims = decodeJWT(tok)
		}
	}
	return nil
}

// decodeJWT decodes a compact JWS without verifying it; nil parts if it is not one.
func decodeJWT(tok string) (header, claims map[string]any) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, nil
	}
	if b, err := b64.DecodeString(parts[0]); err == nil {
		_ = json.Unmarshal(b, &header)
	}
	if b, err := b64.DecodeString(parts[1]); err == nil {
		_ = json.Unmarshal(b, &claims)
	}
	return header, claims
}

// authenticate adds client authentication (RFC 6749 §2.3, RFC 7523 §2.2).
func (cr *caseRun) authenticate(ctx context.Context, req *Request, ex *exchange, hdr http.Header) error {
	var c *Client
	if req.Client != "" {
		c = cr.r.t.Clients[req.Client]
	}
	var id, secret, method string
	if c != nil {
		id, secret, method = c.ID, c.Secret, c.AuthMethod
	}
	var err error
	if req.ClientID != nil {
		if id, err = cr.expand(ctx, *req.ClientID); err != nil {
			return fmt.Errorf("client_id: %w", err)
		}
		if method == "" {
			method = "client_secret_basic"
		}
	}
	if req.ClientSecret != nil {
		if secret, err = cr.expand(ctx, *req.ClientSecret); err != nil {
			return fmt.Errorf("client_secret: %w", err)
		}
	}
	if req.Auth != "" {
		method = req.Auth
	}
	basic := func() {
		// RFC 6749 §2.3.1: the id and secret are form-encoded before Basic encoding.
		cred := url.QueryEscape(id) + ":" + url.QueryEscape(secret)
		hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(cred)))
	}
	switch method {
	case "", "none":
		if req.ClientID != nil {
			ex.form.Set("client_id", id)
		}
	case "client_secret_basic":
		basic()
	case "client_secret_post":
		ex.form.Set("client_id", id)
		ex.form.Set("client_secret", secret)
	case "basic_and_post":
		basic()
		ex.form.Set("client_id", id)
		ex.form.Set("client_secret", secret)
	case "private_key_jwt":
		if c == nil {
			return errors.New("private_key_jwt needs a client role with a key")
		}
		a, err := cr.assertion(c, id, req.Assertion)
		if err != nil {
			return fmt.Errorf("client assertion: %w", err)
		}
		ex.assertion = a
		ex.form.Set("client_assertion_type", assertionType)
		ex.form.Set("client_assertion", a)
	}
	return nil
}

// assertion makes (or reuses) an RFC 7523 §3 client assertion.
func (cr *caseRun) assertion(c *Client, id string, a *Assertion) (string, error) {
	if a == nil {
		a = &Assertion{}
	}
	if a.Reuse != "" {
		prev := cr.steps[a.Reuse]
		if prev == nil || prev.assertion == "" {
			return "", fmt.Errorf("step %s sent no assertion to reuse", a.Reuse)
		}
		return prev.assertion, nil
	}
	now := time.Now()
	claims := map[string]any{
		"iss": id, "sub": id, "aud": cr.r.t.TokenEndpoint, "jti": rand.Text(),
		"iat": now.Unix(), "exp": now.Add(2 * time.Minute).Unix(),
	}
	if a.Audience != "" {
		claims["aud"] = a.Audience
	}
	if a.Issuer != "" {
		claims["iss"] = a.Issuer
	}
	if a.Expired {
		claims["iat"], claims["exp"] = now.Add(-20*time.Minute).Unix(), now.Add(-10*time.Minute).Unix()
	}
	for _, k := range a.Omit {
		delete(claims, k)
	}
	return c.signAssertion(claims)
}

func signJWSWithKey(key jwk.Key, alg jwa.SignatureAlgorithm, kid string, payload []byte) (string, error) {
	h := jws.NewHeaders()
	if err := h.Set(jws.TypeKey, "JWT"); err != nil {
		return "", fmt.Errorf("conformance: assertion header: %w", err)
	}
	if kid != "" {
		if err := h.Set(jws.KeyIDKey, kid); err != nil {
			return "", fmt.Errorf("conformance: assertion header: %w", err)
		}
	}
	b, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		return "", fmt.Errorf("conformance: sign assertion: %w", err)
	}
	return string(b), nil
}

// expand replaces the placeholders in s.
func (cr *caseRun) expand(ctx context.Context, s string) (string, error) {
	var firstErr error
	out := placeholderRE.ReplaceAllStringFunc(s, func(m string) string {
		if firstErr != nil {
			return ""
		}
		sub := placeholderRE.FindStringSubmatch(m)
		v, err := cr.placeholder(ctx, sub[1], sub[2])
		if err != nil {
			firstErr = fmt.Errorf("%s: %w", m, err)
		}
		return v
	})
	return out, firstErr
}

func (cr *caseRun) placeholder(ctx context.Context, kind, args string) (string, error) {
	r := cr.r
	t := r.t
	user := func(parts []string) UserToken {
		u := UserToken{Subject: "alice", Scope: "mail:read calendar:read", Audience: t.IdP.Audience}
		if len(parts) > 0 && parts[0] != "" {
			u.Subject = parts[0]
			// "@role" is that role's client id: a workload token for the client.
			if role, ok := strings.CutPrefix(parts[0], "@"); ok && t.Clients[role] != nil {
				u.Subject = t.Clients[role].ID
			}
		}
		if len(parts) > 1 {
			u.Scope = strings.Join(parts[1:], ":")
		}
		return u
	}
	switch kind {
	case "issuer":
		return t.Issuer, nil
	case "idp_issuer":
		return r.idp.URL(), nil
	case "token_endpoint":
		return t.TokenEndpoint, nil
	case "user_token":
		return r.idp.Mint(user(strings.Split(args, ":")))
	case "user_token_ttl":
		parts := strings.Split(args, ":")
		secs, _ := strconv.Atoi(parts[0])
		u := user(parts[1:])
		u.TTL = time.Duration(secs) * time.Second
		return r.idp.Mint(u)
	case "bad_token":
		parts := strings.Split(args, ":")
		return r.idp.MintBad(parts[0], user(parts[1:]))
	case "forged_token":
		return cr.forged(ctx, strings.Split(args, ":"))
	case "token_from":
		ex := cr.steps[args]
		if ex == nil || ex.token == "" {
			return "", fmt.Errorf("step %s issued no access_token", args)
		}
		return ex.token, nil
	case "client":
		return t.Clients[args].ID, nil
	case "actor_token":
		return cr.clientToken(ctx, args)
	case "grant_id", "grant_expires_at":
		parts := strings.Split(args, ":")
		if t.Mandate == nil {
			return "", errors.New("grants exist only in mandate setup mode")
		}
		key := parts[0] + "/" + parts[1]
		id := t.Mandate.Grants[key]
		if id == "" {
			return "", fmt.Errorf("the fixture has no grant from %s to %s", parts[0], parts[1])
		}
		if kind == "grant_expires_at" {
			return strconv.FormatInt(t.Mandate.GrantExpiry[key], 10), nil
		}
		return id, nil
	}
	return "", fmt.Errorf("unknown placeholder %q", kind)
}

// clientToken gets a client_credentials token for a role: its actor token.
func (cr *caseRun) clientToken(ctx context.Context, role string) (string, error) {
	req := &Request{Endpoint: "token", Client: role, Form: map[string]StringList{"grant_type": {grantClientCredentials}}}
	ex := &exchange{form: url.Values{"grant_type": {grantClientCredentials}}}
	hdr := http.Header{}
	if err := cr.authenticate(ctx, req, ex, hdr); err != nil {
		return "", err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, cr.r.t.TokenEndpoint, strings.NewReader(ex.form.Encode()))
	if err != nil {
		return "", fmt.Errorf("request: %w", err)
	}
	hreq.Header = hdr
	hreq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if err := cr.r.do(hreq, ex); err != nil {
		return "", err
	}
	if ex.status != http.StatusOK || ex.token == "" {
		return "", fmt.Errorf("client_credentials for %s: %s", role, evidence(ex))
	}
	return ex.token, nil
}

// forged makes a token that claims the target as issuer and names the holder
// role as its client (and the next-hop role in may_act), signed without the
// target's key.
func (cr *caseRun) forged(ctx context.Context, parts []string) (string, error) {
	r := cr.r
	raw, set, err := r.targetJWKS(ctx)
	if err != nil {
		return "", err
	}
	kid := "unknown"
	if set.Len() > 0 {
		k, _ := set.Key(0)
		kid = k.KeyID()
	}
	holder := r.t.Clients[parts[1]].ID
	now := time.Now()
	claims := map[string]any{
		"iss": r.t.Issuer, "sub": "alice", "sub_iss": r.idp.URL(), "aud": []string{ResourceMail},
		"client_id": holder, "scope": "mail:read", "act": map[string]any{"sub": holder},
		"jti": rand.Text(), "iat": now.Unix(), "exp": now.Add(5 * time.Minute).Unix(), "depth": 1,
	}
	if len(parts) > 2 {
		next := r.t.Clients[parts[2]].ID
		claims["may_act"] = map[string]any{"sub": next}
		claims["aud"] = []string{next}
	}
	return r.idp.Forge(parts[0], claims, raw, kid)
}

// targetJWKS fetches (once) the target's published keys.
func (r *runner) targetJWKS(ctx context.Context) ([]byte, jwk.Set, error) {
	if r.jwksSet != nil {
		return r.jwksRaw, r.jwksSet, nil
	}
	if r.t.JWKSURI == "" {
		return nil, nil, errors.New("the target has no jwks_uri")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.t.JWKSURI, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: %w", err)
	}
	ex := &exchange{}
	if err := r.do(req, ex); err != nil {
		return nil, nil, fmt.Errorf("jwks: %w", err)
	}
	if ex.status != http.StatusOK {
		return nil, nil, fmt.Errorf("jwks: %s", evidence(ex))
	}
	set, err := jwk.Parse([]byte(ex.raw))
	if err != nil {
		return nil, nil, fmt.Errorf("jwks: %w", err)
	}
	r.jwksRaw, r.jwksSet = []byte(ex.raw), set
	return r.jwksRaw, set, nil
}

// verify checks a token's signature with the target's JWKS.
func (r *runner) verify(ctx context.Context, tok string) error {
	_, set, err := r.targetJWKS(ctx)
	if err != nil {
		return err
	}
	if _, err := jws.Verify([]byte(tok), jws.WithKeySet(set, jws.WithInferAlgorithmFromKey(true), jws.WithRequireKid(false))); err != nil {
		// A key published since the first fetch (rotation): fetch once more.
		r.jwksSet = nil
		if _, set2, err2 := r.targetJWKS(ctx); err2 == nil {
			if _, err3 := jws.Verify([]byte(tok), jws.WithKeySet(set2, jws.WithInferAlgorithmFromKey(true), jws.WithRequireKid(false))); err3 == nil {
				return nil
			}
		}
		return fmt.Errorf("the access_token signature does not verify with the JWKS at %s: %v", r.t.JWKSURI, err)
	}
	return nil
}

// action runs a mandate-only step: the user changes their own grant.
func (cr *caseRun) action(ctx context.Context, s Step) error {
	r := cr.r
	a := s.Action
	m := r.t.Mandate
	id := m.Grants[a.User+"/"+a.Client]
	if id == "" {
		return fmt.Errorf("the fixture has no grant from %s to %s", a.User, a.Client)
	}
	tok, err := r.idp.Mint(UserToken{Subject: a.User, Scope: "openid", Audience: r.t.IdP.Audience, TTL: 5 * time.Minute})
	if err != nil {
		return err
	}
	method, path, want := http.MethodDelete, "/v1/grants/"+url.PathEscape(id)+"?reason=conformance", http.StatusNoContent
	var body map[string]any
	if a.Kind == "narrow_grant" {
		method, path, want = http.MethodPatch, "/v1/grants/"+url.PathEscape(id), http.StatusOK
		body = map[string]any{}
		if a.Scopes != nil {
			body["scopes"] = a.Scopes
		}
		if a.Resources != nil {
			body["resources"] = a.Resources
		}
		if a.SubAgents != nil {
			ids := []string{}
			for _, role := range *a.SubAgents {
				ids = append(ids, r.t.Clients[role].ID)
			}
			body["allowed_sub_agents"] = ids
		}
	}
	if s.Expect != nil && len(s.Expect.Status) > 0 {
		want = s.Expect.Status[0]
	}
	api := &mandateAPI{hc: r.hc, base: m.URL}
	if err := api.call(ctx, method, path, "Bearer "+tok, body, want, nil); err != nil {
		return fmt.Errorf("%s %s/%s: %w", a.Kind, a.User, a.Client, err)
	}
	cr.steps[s.ID] = &exchange{status: want}
	return nil
}

// autoChecks are the rules every answer of an endpoint must follow, whatever the case.
func (r *runner) autoChecks(req *Request, ex *exchange) error {
	m, _ := ex.body.(map[string]any)
	switch req.Endpoint {
	case "token":
		if ex.status == http.StatusOK {
			// RFC 6749 §5.1: Cache-Control: no-store on any response with tokens.
			if !hasToken(ex.header.Values("Cache-Control"), "no-store") {
				return fmt.Errorf("RFC 6749 §5.1: a token response must carry Cache-Control: no-store, got %q", ex.header.Get("Cache-Control"))
			}
			for _, f := range []string{"access_token", "token_type"} {
				if _, ok := m[f].(string); !ok {
					return fmt.Errorf("RFC 6749 §5.1: a token response must carry %s", f)
				}
			}
			if ex.form.Get("grant_type") == grantTokenExchange {
				if _, ok := m["issued_token_type"].(string); !ok {
					return errors.New("RFC 8693 §2.2.1: issued_token_type is REQUIRED")
				}
			}
		}
		if ex.status == http.StatusBadRequest || ex.status == http.StatusUnauthorized {
			// RFC 6749 §5.2: a JSON object with an error code.
			if _, ok := m["error"].(string); !ok {
				return errors.New("RFC 6749 §5.2: an error response must be JSON with an error member")
			}
			if r.t.HasFeature(FeatureStrictErrors) {
				if d, _ := m["error_description"].(string); d == "" {
					return errors.New("strict errors: every error must carry an error_description")
				}
				if !hasToken(ex.header.Values("Cache-Control"), "no-store") {
					return fmt.Errorf("strict errors: every token response must carry Cache-Control: no-store, got %q", ex.header.Get("Cache-Control"))
				}
			}
		}
	case "introspection":
		if ex.status == http.StatusOK {
			if _, ok := m["active"].(bool); !ok {
				return errors.New("RFC 7662 §2.2: the answer must be JSON with a boolean active member")
			}
		}
	}
	return nil
}

// hasToken reports whether a comma-separated header holds the token.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for _, p := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(p), token) {
				return true
			}
		}
	}
	return false
}

// expect checks an answer against a case's expectations.
func (cr *caseRun) expect(ctx context.Context, e *Expect, ex *exchange) error {
	statuses := e.Status
	switch {
	case len(statuses) > 0:
		if !slices.Contains(statuses, ex.status) {
			return fmt.Errorf("status %d, want %v", ex.status, []int(statuses))
		}
	case len(e.Error) > 0:
		if ex.status < 400 || ex.status > 499 {
			return fmt.Errorf("status %d, want a 4xx error", ex.status)
		}
	default:
		if ex.status != http.StatusOK {
			return fmt.Errorf("status %d, want 200", ex.status)
		}
	}
	m, isObj := ex.body.(map[string]any)
	if len(e.Error) > 0 {
		code, _ := m["error"].(string)
		if !slices.Contains(e.Error, code) {
			return fmt.Errorf("error %q, want %s", code, strings.Join(e.Error, " or "))
		}
	}
	names := make([]string, 0, len(e.Headers))
	for h := range e.Headers {
		names = append(names, h)
	}
	sort.Strings(names)
	for _, h := range names {
		if err := checkHeader(ex.header, h, e.Headers[h]); err != nil {
			return err
		}
	}
	if (len(e.Fields) > 0 || len(e.Absent) > 0) && !isObj {
		return errors.New("the answer is not a JSON object")
	}
	for _, f := range e.Fields {
		if v, ok := m[f]; !ok || v == nil {
			return fmt.Errorf("field %s is missing", f)
		}
	}
	for _, f := range e.Absent {
		if _, ok := m[f]; ok {
			return fmt.Errorf("field %s must be absent", f)
		}
	}
	if err := cr.checks(ctx, e.Body, ex.body, "body"); err != nil {
		return err
	}
	if len(e.Claims) > 0 || len(e.TokenHeader) > 0 || e.VerifySignature {
		if ex.token == "" {
			return errors.New("the answer carries no access_token to check")
		}
		if ex.claims == nil {
			return errors.New("the access_token is not a JWT")
		}
		if err := cr.checks(ctx, e.Claims, ex.claims, "claims"); err != nil {
			return err
		}
		if err := cr.checks(ctx, e.TokenHeader, ex.tokHeader, "token header"); err != nil {
			return err
		}
		if e.VerifySignature {
			if err := cr.r.verify(ctx, ex.token); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkHeader(h http.Header, name, want string) error {
	got := h.Values(name)
	switch {
	case want == "!":
		if len(got) > 0 {
			return fmt.Errorf("header %s must be absent, got %q", name, got)
		}
	case want == "*":
		if len(got) == 0 {
			return fmt.Errorf("header %s is missing", name)
		}
	case strings.HasSuffix(want, "*"):
		if len(got) == 0 || !strings.HasPrefix(strings.ToLower(got[0]), strings.ToLower(strings.TrimSuffix(want, "*"))) {
			return fmt.Errorf("header %s is %q, want %s", name, got, want)
		}
	default:
		if !hasToken(got, want) {
			return fmt.Errorf("header %s is %q, want %q", name, got, want)
		}
	}
	return nil
}

func (cr *caseRun) checks(ctx context.Context, srcs []string, doc any, what string) error {
	if len(srcs) > 0 && doc == nil {
		return fmt.Errorf("no %s to check (not JSON)", what)
	}
	for _, src := range srcs {
		ck, err := ParseCheck(src)
		if err != nil {
			return err
		}
		rhs, err := cr.expand(ctx, ck.RHS)
		if err != nil {
			return err
		}
		var val any = rhs
		isRef := false
		if ref, ok := strings.CutPrefix(rhs, "$"); ok && ck.Op != "matches" {
			val, err = cr.ref(ref)
			if err != nil {
				return fmt.Errorf("%s: %w", src, err)
			}
			isRef = true
		}
		if err := ck.Eval(doc, val, isRef); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// ref resolves STEP.PATH (claims of the token a step issued), self.PATH (of the
// token this step issued), subject.PATH or actor.PATH (claims of the tokens sent
// in this step's request).
func (cr *caseRun) ref(ref string) (any, error) {
	name, path, _ := strings.Cut(ref, ".")
	var claims map[string]any
	switch name {
	case "self":
		claims = cr.cur.claims
		if claims == nil {
			return nil, errors.New("this answer carries no JWT")
		}
	case "subject", "actor":
		_, claims = decodeJWT(cr.cur.form.Get(name + "_token"))
		if claims == nil {
			return nil, fmt.Errorf("the %s_token sent is not a JWT", name)
		}
	default:
		ex := cr.steps[name]
		if ex == nil || ex.claims == nil {
			return nil, fmt.Errorf("step %s issued no JWT", name)
		}
		claims = ex.claims
	}
	fs := lookup(claims, path)
	if len(fs) != 1 || !fs[0].ok {
		return nil, fmt.Errorf("$%s is absent", ref)
	}
	return fs[0].v, nil
}

var jwtRE = regexp.MustCompile(`eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*`)

// evidence shows an answer briefly, with tokens shortened.
func evidence(ex *exchange) string {
	body := jwtRE.ReplaceAllStringFunc(strings.TrimSpace(ex.raw), func(t string) string {
		return fmt.Sprintf("eyJ…(%d bytes)", len(t))
	})
	if body == "" {
		body = "(empty body)"
	}
	return fmt.Sprintf("HTTP %d %s", ex.status, truncate(body, 400))
}
