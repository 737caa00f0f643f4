package conformance

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/mandate-dev/mandate/internal/db/dbtest"
)

// The property test generates random delegation stories (a grant with random
// scopes, resources, sub-agents, depth and lifetime limits; then random hops by
// random agents asking for random scopes and targets) and checks, against a
// model written from docs/exchange.md, that every issued token is attenuated
// (scope ⊆ parent ∩ grant ∩ client, audiences allowed, exp ≤ parent's,
// depth and act as the hop demands) and that every refusal carries an RFC
// error code among those the model allows.

var (
	propAgents    = []string{RoleAgentA, RoleAgentB, RoleAgentC, RoleAgentD}
	propScopes    = []string{"mail:read", "mail:write", "calendar:read"}
	propResources = []string{ResourceMail, ResourceCalendar, ResourceReports}
)

// scenario is one random story; testing/quick generates it.
type scenario struct {
	Owner          string   // the role the user grants to
	GrantScopes    []string // non-empty
	GrantResources []string // non-empty; may hold the prefix pattern
	SubAgents      []string // roles
	MaxDepth       int      // 0 (server maximum) to 3
	MaxLifetime    int      // seconds; 0 = none of its own
	UserScopes     []string
	UserTTL        int     // seconds
	Hops           []int64 // one seed per hop: its choices depend on the tokens held by then
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

func subset(r *rand.Rand, xs []string, nonEmpty bool) []string {
	for {
		var out []string
		for _, x := range xs {
			if r.Intn(2) == 0 {
				out = append(out, x)
			}
		}
		if len(out) > 0 || !nonEmpty {
			return out
		}
	}
}

// Generate implements quick.Generator.
func (scenario) Generate(r *rand.Rand, _ int) reflect.Value {
	// Biased towards stories that go somewhere: half the grants go to agent A
	// (registered for the most), most users hold every scope.
	s := scenario{
		Owner:          pick(r, append([]string{RoleAgentA, RoleAgentA, RoleAgentA}, propAgents...)),
		GrantScopes:    subset(r, propScopes, true),
		GrantResources: subset(r, []string{ResourceMail, ResourceCalendar, ResourceAPIs}, true),
		MaxDepth:       r.Intn(4),
		MaxLifetime:    pick(r, []int{0, 0, 60, 300}),
		UserScopes:     propScopes,
		UserTTL:        pick(r, []int{90, 3600}),
	}
	if r.Intn(3) == 0 {
		s.UserScopes = subset(r, propScopes, true)
	}
	for _, a := range propAgents {
		if a != s.Owner && r.Intn(3) > 0 {
			s.SubAgents = append(s.SubAgents, a)
		}
	}
	for range 4 + r.Intn(7) {
		s.Hops = append(s.Hops, r.Int63())
	}
	return reflect.ValueOf(s)
}

// held is a token issued during the story.
type held struct {
	token  string
	claims map[string]any
	holder string // role
	next   string // role named in may_act, or ""
}

// propRun runs scenarios against one node.
type propRun struct {
	t       *testing.T
	target  *Target
	idp     *IdP
	hc      *http.Client
	fixture map[string]FixtureClient
	byID    map[string]string // client id → role
	n       int
	stats   map[string]int // outcomes, for the log
}

func TestAttenuationProperty(t *testing.T) {
	for _, dialect := range dbtest.Backends() {
		t.Run(string(dialect), func(t *testing.T) {
			target, idp := setupNode(t, dialect)
			p := &propRun{t: t, target: target, idp: idp, hc: newHTTPClient(), fixture: map[string]FixtureClient{}, byID: map[string]string{}, stats: map[string]int{}}
			for _, fc := range FixtureClients {
				p.fixture[fc.Role] = fc
				p.byID[target.Clients[fc.Role].ID] = fc.Role
			}
			var issued, refused int
			prop := func(s scenario) bool {
				i, r, ok := p.run(s)
				issued, refused = issued+i, refused+r
				return ok
			}
			// A fixed seed: the same 30 stories every run, so a failure reproduces.
			cfg := &quick.Config{MaxCount: 30, Rand: rand.New(rand.NewSource(8693))}
			if err := quick.Check(prop, cfg); err != nil {
				t.Error(err)
			}
			t.Logf("%d tokens issued and checked, %d refusals checked; outcomes %v", issued, refused, p.stats)
			if issued < 30 || refused < 30 {
				t.Errorf("the generator exercised too little: %d issued, %d refused", issued, refused)
			}
		})
	}
}

// run plays one scenario; it reports what it checked and whether every check held.
func (p *propRun) run(s scenario) (issued, refused int, ok bool) {
	t := p.t
	ctx := context.Background()
	p.n++
	user := fmt.Sprintf("prop-%d", p.n)
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf("story %d %+v: %s", p.n, s, fmt.Sprintf(format, args...))
		ok = false
	}
	ok = true

	// The user grants the owner.
	subIDs := []string{}
	for _, r := range s.SubAgents {
		subIDs = append(subIDs, p.target.Clients[r].ID)
	}
	userTok, err := p.idp.Mint(UserToken{Subject: user, Scope: strings.Join(s.UserScopes, " "), Audience: p.target.IdP.Audience, TTL: time.Duration(s.UserTTL) * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	grantExp := time.Now().Add(24 * time.Hour).UTC().Truncate(time.Second)
	var g struct {
		GrantID string `json:"grant_id"`
	}
	api := &mandateAPI{hc: p.hc, base: p.target.Mandate.URL}
	if err := api.call(ctx, http.MethodPost, "/v1/grants", "Bearer "+userTok, map[string]any{
		"client_id": p.target.Clients[s.Owner].ID, "scopes": s.GrantScopes, "resources": s.GrantResources,
		"allowed_sub_agents": subIDs, "max_depth": s.MaxDepth, "max_lifetime_seconds": s.MaxLifetime,
		"expires_at": grantExp.Format(time.RFC3339),
	}, http.StatusCreated, &g); err != nil {
		t.Fatalf("story %d: create grant: %v", p.n, err)
	}
	_, userClaims := decodeJWT(userTok)

	var pool []held
	for _, seed := range s.Hops {
		r := rand.New(rand.NewSource(seed))
		// The subject: the user's token, or one issued earlier.
		var subj *held
		if len(pool) > 0 && r.Intn(10) >= 3 {
			h := pool[len(pool)-1]
			if r.Intn(2) == 0 {
				h = pick(r, pool)
			}
			subj = &h
		}
		// Who asks: mostly the party that may, sometimes anyone.
		client := pick(r, propAgents)
		switch x := r.Intn(10); {
		case subj == nil && x < 8:
			client = s.Owner
		case subj != nil && subj.next != "" && x < 6:
			client = subj.next
		case subj != nil && x < 7:
			client = subj.holder
		}
		parentScope := strings.Fields(fmt.Sprint(userClaims["scope"]))
		if subj != nil {
			parentScope = strings.Fields(fmt.Sprint(subj.claims["scope"]))
		}
		var scopes []string
		switch r.Intn(4) {
		case 0: // none: everything allowed
		case 1, 2: // within what may be allowed
			scopes = subset(r, intersect(intersect(parentScope, s.GrantScopes), p.fixture[client].Scopes), false)
		default: // anything, escalations included
			scopes = subset(r, append(slices.Clone(propScopes), "files:read"), true)
		}
		form := url.Values{
			"grant_type":         {grantTokenExchange},
			"subject_token_type": {tokenTypeAccessToken},
			"subject_token":      {userTok},
		}
		if subj != nil {
			form.Set("subject_token", subj.token)
		}
		if len(scopes) > 0 {
			form.Set("scope", strings.Join(scopes, " "))
		}
		// Sometimes the client also proves who it is with its own actor
		// token; for an agent that changes nothing.
		if r.Intn(7) == 0 {
			actor, err := p.clientToken(ctx, client)
			if err != nil {
				t.Fatal(err)
			}
			form.Set("actor_token", actor)
			form.Set("actor_token_type", tokenTypeAccessToken)
		}
		var targets []string
		switch x := r.Intn(20); {
		case x < 3: // none: the defaults
		case x < 9: // a next hop, mostly one the grant allows
			next := pick(r, propAgents)
			if len(s.SubAgents) > 0 && r.Intn(4) > 0 {
				next = pick(r, s.SubAgents)
			}
			targets = []string{p.target.Clients[next].ID}
			form.Add("audience", targets[0])
		default:
			res := []string{pick(r, propResources[:2])}
			if r.Intn(3) == 0 {
				res = subset(r, propResources, true)
			}
			for _, res := range res {
				targets = append(targets, res)
				if r.Intn(3) == 0 {
					form.Add("audience", res)
				} else {
					form.Add("resource", res)
				}
			}
		}

		want := p.predict(s, client, subj, userClaims, scopes, targets, g.GrantID)
		ex, err := p.exchange(ctx, client, form)
		if err != nil {
			t.Fatal(err)
		}
		what := fmt.Sprintf("hop by %s (subject held by %q, next hop %q) scope %q targets %q", client, holderOf(subj), nextOf(subj), scopes, targets)
		body, _ := ex.body.(map[string]any)
		if len(want.codes) > 0 {
			refused++
			p.stats[fmt.Sprint(want.codes)]++
			code, _ := body["error"].(string)
			desc, _ := body["error_description"].(string)
			switch {
			case ex.status != http.StatusBadRequest || !slices.Contains(want.codes, code):
				fail("%s: got %s, want 400 with one of %v", what, evidence(ex), want.codes)
			case desc == "":
				fail("%s: error %s has no error_description", what, code)
			case !hasToken(ex.header.Values("Cache-Control"), "no-store"):
				fail("%s: error without Cache-Control: no-store", what)
			}
			continue
		}
		if ex.status != http.StatusOK || ex.claims == nil {
			fail("%s: got %s, want a token (the model allows it)", what, evidence(ex))
			continue
		}
		issued++
		p.stats[fmt.Sprintf("ok depth %d next %v", want.depth, want.nextHop != "")]++
		for _, e := range p.checkToken(want, ex, subj, userClaims, s, grantExp) {
			fail("%s: %s", what, e)
		}
		pool = append(pool, held{token: ex.token, claims: ex.claims, holder: client, next: p.byID[want.nextHop]})
	}
	return issued, refused, ok
}

func holderOf(h *held) string {
	if h == nil {
		return "(user)"
	}
	return h.holder
}

func nextOf(h *held) string {
	if h == nil {
		return ""
	}
	return h.next
}

// prediction is what the model says an exchange must give.
type prediction struct {
	codes   []string // non-empty: must be refused with one of these
	depth   int
	act     any
	scopes  []string // issued scope set
	targets []string // issued aud set
	nextHop string   // client id named in may_act
	grantID string
}

// predict applies docs/exchange.md to one request. Where the docs give no
// order between several violated rules, any of their codes is acceptable.
func (p *propRun) predict(s scenario, client string, subj *held, userClaims map[string]any, scopes, targets []string, grantID string) prediction {
	id := func(role string) string { return p.target.Clients[role].ID }
	fc := p.fixture[client]
	var codes []string
	add := func(c string) {
		if !slices.Contains(codes, c) {
			codes = append(codes, c)
		}
	}
	pr := prediction{grantID: grantID}
	parentScope := strings.Fields(fmt.Sprint(userClaims["scope"]))
	if subj == nil {
		// Consent: only the owner holds a grant from this user.
		if client != s.Owner {
			return prediction{codes: []string{"invalid_grant"}}
		}
		pr.depth, pr.act = 1, map[string]any{"sub": id(client)}
	} else {
		parentScope = strings.Fields(fmt.Sprint(subj.claims["scope"]))
		d, _ := subj.claims["depth"].(float64)
		switch {
		case client == subj.holder: // the holder narrows: same hop
			pr.depth, pr.act = int(d), subj.claims["act"]
		case client == subj.next: // the next hop it names: nest the chain
			pr.depth, pr.act = int(d)+1, map[string]any{"sub": id(client), "act": subj.claims["act"]}
			if !slices.Contains(s.SubAgents, client) {
				add("invalid_grant")
			}
		default: // holder binding
			return prediction{codes: []string{"invalid_request"}}
		}
	}
	maxDepth := 5
	if s.MaxDepth > 0 && s.MaxDepth < maxDepth {
		maxDepth = s.MaxDepth
	}
	if pr.depth > maxDepth {
		add("invalid_request")
	}
	if pr.depth > 3 { // the default policy's maximum
		add("invalid_grant")
	}
	available := intersect(intersect(parentScope, fc.Scopes), s.GrantScopes)
	pr.scopes = scopes
	if len(scopes) == 0 {
		pr.scopes = available
		if len(available) == 0 {
			add("invalid_scope")
		}
	}
	for _, sc := range scopes {
		if !slices.Contains(available, sc) {
			add("invalid_scope")
		}
	}

	pr.targets = targets
	if len(targets) == 0 {
		if subj != nil {
			pr.targets = intersect(audOf(subj.claims), fc.Audiences)
		}
		if len(pr.targets) == 0 && len(fc.Audiences) == 1 {
			pr.targets = fc.Audiences
		}
		if len(pr.targets) == 0 {
			add("invalid_target")
		}
	}
	for _, tg := range pr.targets {
		role, isAgent := p.byID[tg]
		switch {
		case slices.Contains(fc.Audiences, tg):
			if !covers(s.GrantResources, tg) {
				add("invalid_target")
			}
		case isAgent && role != client && slices.Contains(s.SubAgents, role):
			if pr.nextHop == "" {
				pr.nextHop = tg
			}
		default:
			add("invalid_target")
		}
	}
	if pr.nextHop != "" && len(pr.targets) > 1 {
		add("invalid_target")
	}
	if pr.nextHop != "" && pr.depth+1 > maxDepth {
		add("invalid_request")
	}
	pr.codes = codes
	return pr
}

// checkToken checks an issued token against the prediction and its parent.
func (p *propRun) checkToken(want prediction, ex *exchange, subj *held, userClaims map[string]any, s scenario, grantExp time.Time) []string {
	c := ex.claims
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	parent := userClaims
	if subj != nil {
		parent = subj.claims
	}
	scope := strings.Fields(fmt.Sprint(c["scope"]))
	if !sameSet(scope, want.scopes) {
		bad("scope %q, want %q", scope, want.scopes)
	}
	for _, sc := range scope {
		fc := p.fixture[p.byID[fmt.Sprint(c["client_id"])]]
		if !slices.Contains(strings.Fields(fmt.Sprint(parent["scope"])), sc) || !slices.Contains(s.GrantScopes, sc) || !slices.Contains(fc.Scopes, sc) {
			bad("scope %q widens: parent %q, grant %q, client %q", sc, parent["scope"], s.GrantScopes, fc.Scopes)
		}
	}
	if aud := audOf(c); !sameSet(aud, want.targets) {
		bad("aud %q, want %q", aud, want.targets)
	}
	if want.nextHop != "" {
		if ma, _ := c["may_act"].(map[string]any); ma["sub"] != want.nextHop {
			bad("may_act %v, want %s", c["may_act"], want.nextHop)
		}
	} else if c["may_act"] != nil {
		bad("may_act %v on a token for no next hop", c["may_act"])
	}
	if d, _ := c["depth"].(float64); int(d) != want.depth {
		bad("depth %v, want %d", c["depth"], want.depth)
	}
	if a, b := show(c["act"], true), show(want.act, true); a != b {
		bad("act %s, want %s (the parent's chain, with a new actor outermost on a new hop)", a, b)
	}
	exp, _ := c["exp"].(float64)
	iat, _ := c["iat"].(float64)
	if pexp, _ := parent["exp"].(float64); exp > pexp {
		bad("exp %v outlives the parent's %v", exp, pexp)
	}
	if exp > float64(grantExp.Unix()) {
		bad("exp %v outlives the grant (%v)", exp, grantExp.Unix())
	}
	if s.MaxLifetime > 0 && exp-iat > float64(s.MaxLifetime) {
		bad("lifetime %vs exceeds the grant's %ds", exp-iat, s.MaxLifetime)
	}
	if exp <= iat {
		bad("exp %v is not after iat %v", exp, iat)
	}
	if c["sub"] != userClaims["sub"] || c["grant_id"] != want.grantID {
		bad("sub %v grant_id %v, want %v %v", c["sub"], c["grant_id"], userClaims["sub"], want.grantID)
	}
	if subj != nil {
		anc, _ := c["anc"].([]any)
		if len(anc) == 0 || anc[len(anc)-1] != subj.claims["jti"] {
			bad("anc %v does not end with the parent %v", anc, subj.claims["jti"])
		}
	}
	body, _ := ex.body.(map[string]any)
	if rs, present := body["scope"]; present && !sameSet(strings.Fields(fmt.Sprint(rs)), scope) {
		bad("the answer's scope %v differs from the token's %q", rs, scope)
	}
	return errs
}

func (p *propRun) exchange(ctx context.Context, role string, form url.Values) (*exchange, error) {
	c := p.target.Clients[role]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.target.TokenEndpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.ID)+":"+url.QueryEscape(c.Secret))))
	ex := &exchange{form: form}
	r := &runner{t: p.target, hc: p.hc}
	if err := r.do(req, ex); err != nil {
		return nil, err
	}
	return ex, nil
}

// clientToken gets a role's client_credentials token, its actor token.
func (p *propRun) clientToken(ctx context.Context, role string) (string, error) {
	ex, err := p.exchange(ctx, role, url.Values{"grant_type": {grantClientCredentials}})
	if err != nil {
		return "", err
	}
	if ex.status != http.StatusOK || ex.token == "" {
		return "", fmt.Errorf("client_credentials for %s: %s", role, evidence(ex))
	}
	return ex.token, nil
}

func audOf(c map[string]any) []string {
	switch a := c["aud"].(type) {
	case string:
		return []string{a}
	case []any:
		var out []string
		for _, x := range a {
			out = append(out, fmt.Sprint(x))
		}
		return out
	}
	return nil
}

func covers(patterns []string, t string) bool {
	for _, p := range patterns {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(t, pre) || p == t {
			return true
		}
	}
	return false
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	for _, x := range b {
		if !slices.Contains(a, x) {
			return false
		}
	}
	return true
}
