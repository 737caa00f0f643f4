package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/mandate-dev/mandate/conformance"
)

func init() { extraCommands = append(extraCommands, newConformanceCmd) }

// errConformanceFailed makes the command exit non-zero after the report is printed.
var errConformanceFailed = errors.New("conformance: some cases failed")

func newConformanceCmd(g *globals) *cobra.Command {
	var (
		configPath, mandateURL, idpAddr, idpAudience, idpKey, match, casesDir string
		groups                                                                []string
		keep                                                                  bool
	)
	cmd := &cobra.Command{
		Use:   "conformance",
		Short: "Run the RFC 8693 conformance suite against a token-exchange server",
		Long: `Run the conformance suite: RFC 8414, 7517, 6749 client authentication, 8693,
8707, 9068, 7662 and 7009 cases, and mandate's delegation guarantees.

The suite plays the upstream identity provider: it serves a JWKS at
http://IDP_ADDR/jwks.json and mints user tokens with iss http://IDP_ADDR. The
server under test must trust that issuer before the run.

Against any server, describe it in a target file (docs/conformance.md):

  mandate conformance --config target.yaml

Against mandate, let the suite register its clients and grants itself
(mandate's upstream_issuers must trust http://127.0.0.1:9999):

  mandate conformance --mandate-url http://127.0.0.1:8080 --admin-key $KEY --idp-addr 127.0.0.1:9999

The table ends with "N passed, N failed[, N skipped]"; the exit status is
non-zero when a case failed. --json prints the report as JSON instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (configPath == "") == (mandateURL == "") {
				return errors.New("give either --config FILE (any server) or --mandate-url URL (mandate, set up by the suite)")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt)
			defer stop()

			var target *conformance.Target
			if configPath != "" {
				t, err := conformance.LoadTarget(configPath)
				if err != nil {
					return err
				}
				target = t
				if idpAddr == "" {
					idpAddr = t.IdP.Addr
				}
			}
			if idpAddr == "" {
				return errors.New("the IdP address is required (--idp-addr or idp.addr): the server under test must trust the suite's IdP at a fixed address")
			}
			var idpOpts []conformance.IdPOption
			if idpKey != "" {
				key, err := loadOrCreateIdPKey(idpKey)
				if err != nil {
					return err
				}
				idpOpts = append(idpOpts, conformance.WithIdPKey(key))
			}
			idp, err := conformance.NewIdP(idpAddr, idpOpts...)
			if err != nil {
				return err
			}
			defer idp.Close()

			if mandateURL != "" {
				var opts []conformance.SetupOption
				if idpAudience != "" {
					opts = append(opts, conformance.WithUserAudience(idpAudience))
				}
				target, err = conformance.SetupMandate(ctx, mandateURL, g.adminKey, idp, opts...)
				if err != nil {
					return err
				}
				if !keep {
					defer func() {
						if err := target.Cleanup(context.WithoutCancel(ctx)); err != nil {
							fmt.Fprintln(cmd.ErrOrStderr(), "mandate:", err)
						}
					}()
				}
			} else if idpAudience != "" {
				target.IdP.Audience = idpAudience
			}

			cases, err := loadCases(casesDir)
			if err != nil {
				return err
			}
			f := conformance.Filter{Groups: groups}
			for _, gr := range groups {
				if !slices.Contains(conformance.Groups, gr) {
					return fmt.Errorf("--group %q is not one of %s", gr, strings.Join(conformance.Groups, ", "))
				}
			}
			if match != "" {
				if f.Match, err = regexp.Compile(match); err != nil {
					return fmt.Errorf("--run: %w", err)
				}
			}

			rep := conformance.RunCases(ctx, target, idp, cases, f)
			out := cmd.OutOrStdout()
			if g.json {
				if err := rep.WriteJSON(out); err != nil {
					return err
				}
				fmt.Fprintln(cmd.ErrOrStderr(), rep.Summary())
			} else if err := rep.WriteTable(out); err != nil {
				return err
			}
			if !rep.OK() {
				return errConformanceFailed
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&configPath, "config", "", "target file describing the server under test (YAML; see docs/conformance.md)")
	fl.StringVar(&mandateURL, "mandate-url", "", "setup mode: mandate's base URL; the suite registers its clients and grants with --admin-key")
	fl.StringVar(&idpAddr, "idp-addr", "", "host:port the suite's IdP listens on (overrides idp.addr); the server must trust http://ADDR")
	fl.StringVar(&idpAudience, "idp-audience", "", "aud of the IdP's user tokens (default: the target's idp.audience, or mandate's issuer in setup mode)")
	fl.StringVar(&idpKey, "idp-key", "", "keep the IdP's signing key in this PEM file (created if missing), so that runs in quick succession reuse a key the server already fetched")
	fl.StringSliceVar(&groups, "group", nil, "run only these groups ("+strings.Join(conformance.Groups, ", ")+")")
	fl.StringVar(&match, "run", "", "run only cases whose name matches this regular expression")
	fl.StringVar(&casesDir, "cases", "", "a folder of extra case files (*.yaml) to run with the built-in ones")
	fl.BoolVar(&keep, "keep", false, "setup mode: keep the registered clients and grants after the run")
	return cmd
}

// loadOrCreateIdPKey reads a P-256 private key (PKCS #8 PEM), or creates one.
func loadOrCreateIdPKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("--idp-key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("--idp-key: %w", err)
		}
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("--idp-key: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("--idp-key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("--idp-key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("--idp-key %s: %w", path, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok || key.Curve != elliptic.P256() {
		return nil, fmt.Errorf("--idp-key %s: want a P-256 EC key", path)
	}
	return key, nil
}

// loadCases returns the built-in cases and those of dir, refusing a name used twice.
func loadCases(dir string) ([]conformance.Case, error) {
	cases, err := conformance.Cases()
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return cases, nil
	}
	extra, err := conformance.LoadCases(os.DirFS(dir))
	if err != nil {
		return nil, err
	}
	if len(extra) == 0 {
		return nil, fmt.Errorf("--cases %s: no *.yaml case file", dir)
	}
	for _, c := range extra {
		if slices.ContainsFunc(cases, func(b conformance.Case) bool { return b.Name == c.Name }) {
			return nil, fmt.Errorf("--cases %s: case %q is also a built-in case", dir, c.Name)
		}
	}
	return append(cases, extra...), nil
}
