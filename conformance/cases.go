package conformance

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

//go:embed cases/*.yaml
var embedded embed.FS

// Groups are the groups a case may belong to, in report order.
var Groups = []string{
	"rfc8414", "rfc7517", "rfc6749-client-auth", "rfc8693", "rfc8707", "rfc9068",
	"rfc7662", "rfc7009", "mandate-guarantees",
}

// File is one case file: a group of cases and what they all require.
type File struct {
	// Group of every case in the file (a case may not override it).
	Group string `yaml:"group"`
	// Requires applies to every case in the file (features or "role:NAME").
	Requires []string `yaml:"requires"`
	// Defs holds YAML anchors the cases reuse (&name … *name); it is not read otherwise.
	Defs  any    `yaml:"defs"`
	Cases []Case `yaml:"cases"`
}

// Case is one conformance case: a request, or several steps, and what the
// answers must be.
type Case struct {
	// Name is unique across all files.
	Name string `yaml:"name" json:"name"`
	// Spec is the clause the case checks, e.g. "RFC 8693 §2.1".
	Spec string `yaml:"spec" json:"spec"`
	// Group is set from the file.
	Group string `yaml:"-" json:"group"`
	// Description says what is checked and why, for the reader of a failure.
	Description string `yaml:"description" json:"description,omitempty"`
	// Requires lists features ("mandate", ...) or roles ("role:agent_d") the
	// case needs beyond the roles it names; otherwise it is skipped.
	Requires []string `yaml:"requires" json:"requires,omitempty"`
	// Request and Expect are the one-step shorthand for Steps.
	Request *Request `yaml:"request" json:"-"`
	Expect  *Expect  `yaml:"expect" json:"-"`
	// Steps run in order; a later step refers to an earlier one by id.
	Steps []Step `yaml:"steps" json:"-"`
}

// Step is one request (or one mandate action) and its expectations.
type Step struct {
	ID      string   `yaml:"id"`
	Request *Request `yaml:"request"`
	Action  *Action  `yaml:"action"`
	// Expect defaults to status 200 for requests and success for actions.
	Expect *Expect `yaml:"expect"`
}

// Action is a mandate-only operation outside the OAuth endpoints, done by the
// user through the users' grants API on their grant to the role's client.
type Action struct {
	// Kind is "revoke_grant" or "narrow_grant".
	Kind   string `yaml:"kind"`
	User   string `yaml:"user"`
	Client string `yaml:"client"`
	// Scopes, Resources and SubAgents (roles) are the narrowed grant's, for
	// narrow_grant; absent ones stay as they are.
	Scopes    []string  `yaml:"scopes"`
	Resources []string  `yaml:"resources"`
	SubAgents *[]string `yaml:"sub_agents"`
}

// Request is one HTTP request to the server under test.
type Request struct {
	// Endpoint is token, introspection, revocation, metadata or jwks.
	Endpoint string `yaml:"endpoint"`
	// Method defaults to POST for token, introspection and revocation, GET otherwise.
	Method string `yaml:"method"`
	// Client is the role that authenticates (none: no client authentication).
	Client string `yaml:"client"`
	// Auth overrides the client's method: client_secret_basic, client_secret_post,
	// private_key_jwt, none, or basic_and_post (both at once).
	Auth string `yaml:"auth"`
	// ClientID and ClientSecret override the credentials sent.
	ClientID     *string `yaml:"client_id"`
	ClientSecret *string `yaml:"client_secret"`
	// Assertion adjusts the private_key_jwt client assertion.
	Assertion *Assertion `yaml:"assertion"`
	// Form is the body; a list value repeats the parameter.
	Form map[string]StringList `yaml:"form"`
	// Query is added to the URL.
	Query map[string]string `yaml:"query"`
	// ContentType overrides application/x-www-form-urlencoded.
	ContentType string `yaml:"content_type"`
	// Body replaces the encoded form with this text.
	Body *string `yaml:"body"`
}

// Assertion adjusts a private_key_jwt client assertion (RFC 7523 §3).
type Assertion struct {
	// Audience replaces the token endpoint URL as aud.
	Audience string `yaml:"audience"`
	// Reuse sends the assertion an earlier step sent (replay).
	Reuse string `yaml:"reuse"`
	// Expired sets exp in the past.
	Expired bool `yaml:"expired"`
	// Issuer replaces the client id as iss.
	Issuer string `yaml:"issuer"`
	// Omit drops claims (jti, exp, sub, ...).
	Omit []string `yaml:"omit"`
}

// Expect is what the answer must be.
type Expect struct {
	// Status lists acceptable HTTP statuses; default 200, or any 4xx with Error.
	Status IntList `yaml:"status"`
	// Error lists acceptable error codes (RFC 6749 §5.2).
	Error StringList `yaml:"error"`
	// Headers must have these values: exact (case-insensitive), "*" for
	// present, "!" for absent, or "prefix*".
	Headers map[string]string `yaml:"headers"`
	// Fields must be present in the JSON body, Absent must not.
	Fields []string `yaml:"fields"`
	Absent []string `yaml:"absent"`
	// Body, Claims and TokenHeader are checks (see ParseCheck) on the JSON
	// body, the claims of the access_token it carries, and that token's JOSE header.
	Body        []string `yaml:"body"`
	Claims      []string `yaml:"claims"`
	TokenHeader []string `yaml:"token_header"`
	// VerifySignature verifies the access_token with the server's JWKS.
	VerifySignature bool `yaml:"verify_signature"`
}

// StringList is a string or a list of strings in YAML.
type StringList []string

// UnmarshalYAML accepts a scalar or a sequence.
func (l *StringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = StringList{n.Value}
		return nil
	}
	var ss []string
	if err := n.Decode(&ss); err != nil {
		return err
	}
	*l = ss
	return nil
}

// IntList is an int or a list of ints in YAML.
type IntList []int

// UnmarshalYAML accepts a scalar or a sequence.
func (l *IntList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		v, err := strconv.Atoi(n.Value)
		if err != nil {
			return fmt.Errorf("line %d: status %q is not a number", n.Line, n.Value)
		}
		*l = IntList{v}
		return nil
	}
	var vs []int
	if err := n.Decode(&vs); err != nil {
		return err
	}
	*l = vs
	return nil
}

// Cases returns the embedded cases, validated, in group order.
func Cases() ([]Case, error) {
	sub, err := fs.Sub(embedded, "cases")
	if err != nil {
		return nil, fmt.Errorf("conformance: embedded cases: %w", err)
	}
	return LoadCases(sub)
}

// LoadCases reads every *.yaml file at the root of fsys and validates the
// cases (unique names, known groups, endpoints, roles, placeholders and checks).
func LoadCases(fsys fs.FS) ([]Case, error) {
	names, err := fs.Glob(fsys, "*.yaml")
	if err != nil {
		return nil, fmt.Errorf("conformance: cases: %w", err)
	}
	sort.Strings(names)
	var all []Case
	seen := map[string]string{}
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("conformance: cases: %w", err)
		}
		var f File
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("conformance: %s: %w", name, err)
		}
		if !slices.Contains(Groups, f.Group) {
			return nil, fmt.Errorf("conformance: %s: group %q is not one of %s", name, f.Group, strings.Join(Groups, ", "))
		}
		for i := range f.Cases {
			c := &f.Cases[i]
			c.Group = f.Group
			c.Requires = append(slices.Clone(f.Requires), c.Requires...)
			if err := c.normalize(); err != nil {
				return nil, fmt.Errorf("conformance: %s: case %d (%q): %w", name, i+1, c.Name, err)
			}
			if prev, dup := seen[c.Name]; dup {
				return nil, fmt.Errorf("conformance: %s: case %q is also in %s", name, c.Name, prev)
			}
			seen[c.Name] = path.Base(name)
			all = append(all, *c)
		}
	}
	sort.SliceStable(all, func(i, j int) bool {
		return slices.Index(Groups, all[i].Group) < slices.Index(Groups, all[j].Group)
	})
	return all, nil
}

var endpoints = []string{"token", "introspection", "revocation", "metadata", "jwks"}

var authMethods = []string{"", "client_secret_basic", "client_secret_post", "private_key_jwt", "none", "basic_and_post"}

var namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

// normalize turns the shorthand into one step and validates the case.
func (c *Case) normalize() error {
	if !namePattern.MatchString(c.Name) {
		return errors.New("name must be lowercase letters, digits and dashes")
	}
	if c.Spec == "" {
		return errors.New("spec is required")
	}
	if c.Request != nil {
		if len(c.Steps) > 0 {
			return errors.New("request/expect and steps are exclusive")
		}
		c.Steps = []Step{{ID: "main", Request: c.Request, Expect: c.Expect}}
		c.Request, c.Expect = nil, nil
	} else if c.Expect != nil {
		return errors.New("expect without request")
	}
	if len(c.Steps) == 0 {
		return errors.New("a request or steps are required")
	}
	for _, r := range c.Requires {
		role, isRole := strings.CutPrefix(r, "role:")
		if isRole && !slices.Contains(KnownRoles, role) || !isRole && !slices.Contains(KnownFeatures, r) {
			return fmt.Errorf("requires: unknown %q (features: %s; or role:NAME)", r, strings.Join(KnownFeatures, ", "))
		}
	}
	ids := map[string]bool{}
	for i := range c.Steps {
		s := &c.Steps[i]
		if s.ID == "" {
			s.ID = fmt.Sprintf("step%d", i+1)
		}
		if ids[s.ID] || s.ID == "subject" || s.ID == "actor" || s.ID == "self" {
			return fmt.Errorf("step id %q is repeated or reserved", s.ID)
		}
		if err := s.validate(ids); err != nil {
			return fmt.Errorf("step %s: %w", s.ID, err)
		}
		ids[s.ID] = true
	}
	return nil
}

func (s *Step) validate(earlier map[string]bool) error {
	if (s.Request == nil) == (s.Action == nil) {
		return errors.New("exactly one of request and action is required")
	}
	var texts []string
	if a := s.Action; a != nil {
		if a.Kind != "revoke_grant" && a.Kind != "narrow_grant" {
			return fmt.Errorf("action kind %q is not revoke_grant or narrow_grant", a.Kind)
		}
		if a.SubAgents != nil {
			for _, r := range *a.SubAgents {
				if !slices.Contains(KnownRoles, r) {
					return fmt.Errorf("sub_agents: unknown role %q", r)
				}
			}
		}
		if a.User == "" || !slices.Contains(KnownRoles, a.Client) {
			return errors.New("revoke_grant needs a user and a known client role")
		}
	}
	if r := s.Request; r != nil {
		if !slices.Contains(endpoints, r.Endpoint) {
			return fmt.Errorf("endpoint %q is not one of %s", r.Endpoint, strings.Join(endpoints, ", "))
		}
		if r.Client != "" && !slices.Contains(KnownRoles, r.Client) {
			return fmt.Errorf("client %q is not a known role (%s)", r.Client, strings.Join(KnownRoles, ", "))
		}
		if !slices.Contains(authMethods, r.Auth) {
			return fmt.Errorf("auth %q is not one of %s", r.Auth, strings.Join(authMethods[1:], ", "))
		}
		if a := r.Assertion; a != nil && a.Reuse != "" && !earlier[a.Reuse] {
			return fmt.Errorf("assertion.reuse names %q, not an earlier step", a.Reuse)
		}
		for _, vs := range r.Form {
			texts = append(texts, vs...)
		}
		for _, v := range r.Query {
			texts = append(texts, v)
		}
		for _, p := range []*string{r.ClientID, r.ClientSecret, r.Body} {
			if p != nil {
				texts = append(texts, *p)
			}
		}
	}
	if e := s.Expect; e != nil {
		for _, list := range [][]string{e.Body, e.Claims, e.TokenHeader} {
			for _, src := range list {
				ck, err := ParseCheck(src)
				if err != nil {
					return err
				}
				if ref, ok := strings.CutPrefix(ck.RHS, "$"); ok {
					step, _, _ := strings.Cut(ref, ".")
					if step != "subject" && step != "actor" && step != "self" && !earlier[step] {
						return fmt.Errorf("check %q refers to %q, not an earlier step, $self, $subject or $actor", src, step)
					}
				}
				texts = append(texts, ck.RHS)
			}
		}
	}
	for _, t := range texts {
		for _, m := range placeholderRE.FindAllStringSubmatch(t, -1) {
			if err := checkPlaceholder(m[1], m[2], earlier); err != nil {
				return fmt.Errorf("%s: %w", m[0], err)
			}
		}
	}
	return nil
}

// placeholderRE matches {{kind}} and {{kind:args}}.
var placeholderRE = regexp.MustCompile(`\{\{([a-z_]+)(?::([^}]*))?\}\}`)

func checkPlaceholder(kind, args string, earlier map[string]bool) error {
	parts := strings.Split(args, ":")
	if kind == "user_token" || kind == "user_token_ttl" || kind == "bad_token" {
		for _, p := range parts {
			if role, ok := strings.CutPrefix(p, "@"); ok && !slices.Contains(KnownRoles, role) {
				return fmt.Errorf("unknown role %q", role)
			}
		}
	}
	switch kind {
	case "issuer", "idp_issuer", "token_endpoint":
		return nil
	case "user_token":
		if parts[0] == "" {
			return errors.New("user_token:USER[:SCOPE] needs a user")
		}
	case "user_token_ttl":
		if len(parts) < 2 {
			return errors.New("user_token_ttl:SECONDS:USER[:SCOPE]")
		}
		if _, err := strconv.Atoi(parts[0]); err != nil {
			return errors.New("user_token_ttl: SECONDS is not a number")
		}
	case "bad_token":
		if !slices.Contains(BadKinds, parts[0]) {
			return fmt.Errorf("unknown bad token kind %q", parts[0])
		}
	case "forged_token":
		if !slices.Contains(ForgeKinds, parts[0]) || len(parts) < 2 || !slices.Contains(KnownRoles, parts[1]) {
			return errors.New("forged_token:KIND:HOLDER_ROLE[:NEXT_HOP_ROLE]")
		}
	case "token_from":
		if !earlier[args] {
			return fmt.Errorf("token_from names %q, not an earlier step", args)
		}
	case "client", "actor_token":
		if !slices.Contains(KnownRoles, args) {
			return fmt.Errorf("unknown role %q", args)
		}
	case "grant_id", "grant_expires_at":
		if len(parts) != 2 || !slices.Contains(KnownRoles, parts[1]) {
			return fmt.Errorf("%s:USER:ROLE", kind)
		}
	default:
		return fmt.Errorf("unknown placeholder %q", kind)
	}
	return nil
}

// roles returns every role the case names, in requests, actions and placeholders.
func (c *Case) roles() []string {
	var out []string
	add := func(r string) {
		if r != "" && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	scan := func(s string) {
		for _, m := range placeholderRE.FindAllStringSubmatch(s, -1) {
			parts := strings.Split(m[2], ":")
			switch m[1] {
			case "client", "actor_token":
				add(m[2])
			case "forged_token":
				for _, p := range parts[1:] {
					add(p)
				}
			case "grant_id", "grant_expires_at":
				add(parts[1])
			case "user_token", "bad_token", "user_token_ttl":
				for _, p := range parts {
					if role, ok := strings.CutPrefix(p, "@"); ok {
						add(role)
					}
				}
			}
		}
	}
	for _, r := range c.Requires {
		if role, ok := strings.CutPrefix(r, "role:"); ok {
			add(role)
		}
	}
	for _, s := range c.Steps {
		if s.Action != nil {
			add(s.Action.Client)
			if s.Action.SubAgents != nil {
				for _, r := range *s.Action.SubAgents {
					add(r)
				}
			}
		}
		if r := s.Request; r != nil {
			add(r.Client)
			for _, vs := range r.Form {
				for _, v := range vs {
					scan(v)
				}
			}
			for _, p := range []*string{r.ClientID, r.ClientSecret, r.Body} {
				if p != nil {
					scan(*p)
				}
			}
		}
		if e := s.Expect; e != nil {
			for _, list := range [][]string{e.Body, e.Claims, e.TokenHeader} {
				for _, v := range list {
					scan(v)
				}
			}
		}
	}
	return out
}
