// Package keys holds the keys mandate signs its access tokens with: it creates
// them, keeps them encrypted in the database, rotates them across nodes, and
// serves the current one to the token endpoint and the public set to the JWKS
// endpoint without locking.
//
// A server opens a Manager once and asks it for the active key per token:
//
//	kek, err := keys.ParseKEK(os.Getenv("MANDATE_KEK"))
//	if err != nil { ... }
//	m, err := keys.NewManager(ctx, d, kek, keys.Options{
//		MaxTokenLifetime: cfg.MaxTokenLifetime,
//		PublishDelay:     keys.RecommendedPublishDelay,
//		Logger:           logger,
//	})
//	if err != nil { ... } // e.g. "cannot decrypt signing key ...: wrong MANDATE_KEK?"
//
//	k := m.Active()
//	token, err := k.SignJWS(k.HeaderFor("at+jwt"), claimsJSON)
//
//	// GET /.well-known/jwks.json
//	w.Write(m.JWKS())
//
// # Storage
//
// Each key is a signing_keys row. The private key is PKCS#8 DER sealed with
// AES-256-GCM under the key-encryption key (KEK, 32 bytes from the environment):
// private_enc is nonce(12) || ciphertext || tag, with the kid as additional
// authenticated data, so a ciphertext copied onto another kid does not open. The
// JWKS is derived from the decrypted private keys, never from the stored public
// half alone, so a row written without the KEK is never published; a row that
// fails to decrypt or whose public half disagrees stops NewManager and Reload
// with an error naming the kid.
//
// # Rotation
//
// A key is created next (published, not signing), becomes active (signing; one
// at a time), then retired (published until retired_at + MaxTokenLifetime +
// RetireGrace so that every token it signed still verifies), and is finally
// deleted by Prune. Rotate takes one step at a time: the first call publishes a
// next key, a later call, once the key has been published for PublishDelay,
// promotes it. The delay lets every node Reload and every relying party refresh
// its cached JWKS before a token signed by the new key appears. RotateNow does
// both steps at once, for an operator who needs the old key to stop signing now.
//
// Several nodes share one database. On PostgreSQL, creating the first key and
// rotating run under a transaction-scoped advisory lock, so nodes starting
// together create exactly one active key and exactly one node performs a
// rotation; on SQLite the IMMEDIATE write transaction serializes them. Other
// nodes follow by calling Reload, on a timer or when notified; until then they
// keep signing with the key they have, which is why a retired key stays
// published RetireGrace beyond MaxTokenLifetime.
//
// # Hot path
//
// Active, PublicKey and JWKS read an immutable snapshot through an atomic
// pointer and never lock. SignJWS reuses the base64url form of the headers
// returned by HeaderFor and writes the token into one buffer; ES256 signatures
// are the fixed 64-byte R || S of RFC 7518 §3.4.
package keys
