package conformance

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// strictParse verifies a user token the way a careful server does.
func strictParse(t *testing.T, idp *IdP, set jwk.Set, tok string) error {
	t.Helper()
	_, err := jwt.Parse([]byte(tok),
		jwt.WithKeySet(set, jws.WithInferAlgorithmFromKey(true)),
		jwt.WithValidate(true), jwt.WithIssuer(idp.URL()), jwt.WithAudience("https://mandate.test"),
		jwt.WithRequiredClaim("sub"), jwt.WithRequiredClaim("exp"))
	return err
}

func TestIdP(t *testing.T) {
	idp := newTestIdP(t)
	res, err := http.Get(idp.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	served, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if string(served) != string(idp.JWKS()) {
		t.Fatalf("served JWKS %s differs from JWKS() %s", served, idp.JWKS())
	}
	set, err := jwk.Fetch(context.Background(), idp.JWKSURL())
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := set.Key(0); k.KeyID() != idp.KeyID() {
		t.Fatalf("kid: got %q, want %q", k.KeyID(), idp.KeyID())
	}
	u := UserToken{Subject: "alice", Scope: "mail:read", Audience: "https://mandate.test"}
	good, err := idp.Mint(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictParse(t, idp, set, good); err != nil {
		t.Fatalf("a good token does not verify: %v", err)
	}
	_, claims := decodeJWT(good)
	if claims["sub"] != "alice" || claims["scope"] != "mail:read" || claims["iss"] != idp.URL() {
		t.Fatalf("claims: %v", claims)
	}
	for _, kind := range BadKinds {
		tok, err := idp.MintBad(kind, u)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		err = strictParse(t, idp, set, tok)
		if kind == "oversized" {
			if err != nil || len(tok) < 20<<10 {
				t.Errorf("oversized: got %d bytes, err %v; want a valid token over 20 KiB", len(tok), err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: a strict verifier accepts it", kind)
		}
	}
	hdr, _ := decodeJWT(mustBad(t, idp, "alg_none", u))
	if hdr["alg"] != "none" {
		t.Errorf("alg_none header: %v", hdr)
	}
	if _, err := idp.MintBad("nice", u); err == nil {
		t.Error("an unknown bad kind gives no error")
	}
	if _, err := idp.Mint(UserToken{Subject: "alice"}); err == nil {
		t.Error("a token without audience gives no error")
	}
	for _, kind := range ForgeKinds {
		tok, err := idp.Forge(kind, map[string]any{"iss": "https://mandate.test", "sub": "x"}, []byte(`{"keys":[]}`), "k1")
		if err != nil || strings.Count(tok, ".") != 2 {
			t.Errorf("forge %s: %q %v", kind, tok, err)
		}
	}
}

func mustBad(t *testing.T, idp *IdP, kind string, u UserToken) string {
	t.Helper()
	tok, err := idp.MintBad(kind, u)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
