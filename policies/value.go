package policies

import (
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The input document is built as an ast.Value directly rather than through
// encoding/json and ast.InterfaceToValue: on the decision path that saves a
// marshal, an unmarshal and a conversion. TestInputValueMatchesJSON keeps the
// two forms identical.

// Object keys of the input document. Terms are never modified after they are
// made, so they can be shared by every evaluation.
var (
	kVersion            = ast.InternedTerm("version")
	kClient             = ast.InternedTerm("client")
	kSubject            = ast.InternedTerm("subject")
	kActor              = ast.InternedTerm("actor")
	kActorChain         = ast.InternedTerm("actor_chain")
	kGrant              = ast.InternedTerm("grant")
	kRequest            = ast.InternedTerm("request")
	kMeta               = ast.InternedTerm("meta")
	kID                 = ast.InternedTerm("id")
	kName               = ast.InternedTerm("name")
	kType               = ast.InternedTerm("type")
	kFirstParty         = ast.InternedTerm("first_party")
	kMayImpersonate     = ast.InternedTerm("may_impersonate")
	kScopes             = ast.InternedTerm("scopes")
	kAudiences          = ast.InternedTerm("audiences")
	kIssuer             = ast.InternedTerm("issuer")
	kKind               = ast.InternedTerm("kind")
	kClientID           = ast.InternedTerm("client_id")
	kDepth              = ast.InternedTerm("depth")
	kGrantID            = ast.InternedTerm("grant_id")
	kClaims             = ast.InternedTerm("claims")
	kSub                = ast.InternedTerm("sub")
	kIss                = ast.InternedTerm("iss")
	kResources          = ast.InternedTerm("resources")
	kMaxDepth           = ast.InternedTerm("max_depth")
	kMaxLifetimeSeconds = ast.InternedTerm("max_lifetime_seconds")
	kAllowedSubAgents   = ast.InternedTerm("allowed_sub_agents")
	kExpiresAt          = ast.InternedTerm("expires_at")
	kGrantType          = ast.InternedTerm("grant_type")
	kRequestedTokenType = ast.InternedTerm("requested_token_type")
	kDelegation         = ast.InternedTerm("delegation")
	kTime               = ast.InternedTerm("time")
	kUnix               = ast.InternedTerm("unix")
	kClientIP           = ast.InternedTerm("client_ip")
	kRequestID          = ast.InternedTerm("request_id")
)

// termArena hands out Terms from chunks, so that the input's few dozen terms
// cost a few allocations instead of one each. A chunk is never grown in
// place: terms handed out keep their address.
type termArena struct {
	chunk []ast.Term
}

func (a *termArena) term(v ast.Value) *ast.Term {
	if len(a.chunk) == cap(a.chunk) {
		a.chunk = make([]ast.Term, 0, 64)
	}
	a.chunk = append(a.chunk, ast.Term{Value: v})
	return &a.chunk[len(a.chunk)-1]
}

// str is a string term: an interned one for the strings OPA interns, else
// one from the arena.
func (a *termArena) str(s string) *ast.Term {
	if s == "" {
		return ast.InternedEmptyString
	}
	return a.term(ast.String(s))
}

func (a *termArena) obj(items ...[2]*ast.Term) *ast.Term {
	return a.term(ast.NewObject(items...))
}

// strs is an array of strings; nil becomes [] so that policies never see
// null where the contract promises an array.
func (a *termArena) strs(ss []string) *ast.Term {
	if len(ss) == 0 {
		return ast.InternedEmptyArray
	}
	ts := make([]*ast.Term, len(ss))
	for i, s := range ss {
		ts[i] = a.str(s)
	}
	return a.term(ast.NewArray(ts...))
}

// claims converts verified token claims; nil becomes {}.
func (a *termArena) claims(claims map[string]any) (*ast.Term, error) {
	if len(claims) == 0 {
		return ast.InternedEmptyObject, nil
	}
	v, err := ast.InterfaceToValue(claims)
	if err != nil {
		return nil, err
	}
	return a.term(v), nil
}

// astValue converts in to the Rego value of its JSON form.
func (in *Input) astValue() (ast.Value, error) {
	a := termArena{chunk: make([]ast.Term, 0, 48)}
	subjectClaims, err := a.claims(in.Subject.Claims)
	if err != nil {
		return nil, fmt.Errorf("subject claims: %w", err)
	}

	var items [8][2]*ast.Term
	n := 0
	add := func(k, v *ast.Term) { items[n] = [2]*ast.Term{k, v}; n++ }

	add(kVersion, a.str(in.Version))
	c := &in.Client
	add(kClient, a.obj(
		ast.Item(kID, a.str(c.ID)),
		ast.Item(kName, a.str(c.Name)),
		ast.Item(kType, a.str(c.Type)),
		ast.Item(kFirstParty, ast.InternedTerm(c.FirstParty)),
		ast.Item(kMayImpersonate, ast.InternedTerm(c.MayImpersonate)),
		ast.Item(kScopes, a.strs(c.Scopes)),
		ast.Item(kAudiences, a.strs(c.Audiences)),
	))
	s := &in.Subject
	add(kSubject, a.obj(
		ast.Item(kIssuer, a.str(s.Issuer)),
		ast.Item(kSubject, a.str(s.Subject)),
		ast.Item(kKind, a.str(s.Kind)),
		ast.Item(kClientID, a.str(s.ClientID)),
		ast.Item(kScopes, a.strs(s.Scopes)),
		ast.Item(kDepth, ast.InternedTerm(s.Depth)),
		ast.Item(kGrantID, a.str(s.GrantID)),
		ast.Item(kClaims, subjectClaims),
	))

	if act := in.Actor; act != nil {
		actorClaims, err := a.claims(act.Claims)
		if err != nil {
			return nil, fmt.Errorf("actor claims: %w", err)
		}
		add(kActor, a.obj(
			ast.Item(kIssuer, a.str(act.Issuer)),
			ast.Item(kSubject, a.str(act.Subject)),
			ast.Item(kClientID, a.str(act.ClientID)),
			ast.Item(kClaims, actorClaims),
		))
	}

	chain := ast.InternedEmptyArray
	if len(in.Chain) > 0 {
		links := make([]*ast.Term, len(in.Chain))
		for i, l := range in.Chain {
			if l.Iss == "" {
				links[i] = a.obj(ast.Item(kSub, a.str(l.Sub)))
				continue
			}
			links[i] = a.obj(ast.Item(kSub, a.str(l.Sub)), ast.Item(kIss, a.str(l.Iss)))
		}
		chain = a.term(ast.NewArray(links...))
	}
	add(kActorChain, chain)

	grant := ast.InternedNullTerm
	if g := in.Grant; g != nil {
		grant = a.obj(
			ast.Item(kID, a.str(g.ID)),
			ast.Item(kScopes, a.strs(g.Scopes)),
			ast.Item(kResources, a.strs(g.Resources)),
			ast.Item(kMaxDepth, ast.InternedTerm(g.MaxDepth)),
			ast.Item(kMaxLifetimeSeconds, ast.InternedTerm(g.MaxLifetimeSeconds)),
			ast.Item(kAllowedSubAgents, a.strs(g.AllowedSubAgents)),
			ast.Item(kExpiresAt, ast.InternedTerm(g.ExpiresAt)),
		)
	}
	add(kGrant, grant)

	r := &in.Request
	add(kRequest, a.obj(
		ast.Item(kGrantType, a.str(r.GrantType)),
		ast.Item(kScopes, a.strs(r.Scopes)),
		ast.Item(kAudiences, a.strs(r.Audiences)),
		ast.Item(kResources, a.strs(r.Resources)),
		ast.Item(kRequestedTokenType, a.str(r.RequestedTokenType)),
		ast.Item(kDelegation, ast.InternedTerm(r.Delegation)),
		ast.Item(kDepth, ast.InternedTerm(r.Depth)),
	))
	m := &in.Meta
	add(kMeta, a.obj(
		ast.Item(kTime, a.str(m.Time)),
		ast.Item(kUnix, ast.InternedTerm(m.Unix)),
		ast.Item(kClientIP, a.str(m.ClientIP)),
		ast.Item(kRequestID, a.str(m.RequestID)),
	))
	return ast.NewObject(items[:n]...), nil
}
