-- +goose Up
CREATE TABLE settings (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE clients (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    type            TEXT NOT NULL,
    auth_method     TEXT NOT NULL,
    secret_hash     BLOB,
    jwks            TEXT NOT NULL DEFAULT '',
    grant_types     TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    audiences       TEXT NOT NULL,
    may_impersonate INTEGER NOT NULL DEFAULT 0,
    first_party     INTEGER NOT NULL DEFAULT 0,
    disabled        INTEGER NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    state        TEXT NOT NULL,
    private_enc  BLOB NOT NULL,
    public_jwk   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    activated_at BIGINT NOT NULL DEFAULT 0,
    retired_at   BIGINT NOT NULL DEFAULT 0,
    expires_at   BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE issued_tokens (
    jti            TEXT PRIMARY KEY,
    client_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    subject_issuer TEXT NOT NULL,
    grant_id       TEXT NOT NULL DEFAULT '',
    parent_jti     TEXT NOT NULL DEFAULT '',
    ancestors      TEXT NOT NULL DEFAULT '[]',
    actors         TEXT NOT NULL DEFAULT '[]',
    scope          TEXT NOT NULL DEFAULT '',
    audience       TEXT NOT NULL DEFAULT '[]',
    depth          INTEGER NOT NULL DEFAULT 0,
    issued_at      BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX issued_tokens_client ON issued_tokens (client_id, expires_at);
CREATE INDEX issued_tokens_grant ON issued_tokens (grant_id);
CREATE INDEX issued_tokens_expires ON issued_tokens (expires_at);

CREATE TABLE revocations (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    revoked_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (kind, id)
);
CREATE INDEX revocations_expires ON revocations (expires_at);

CREATE TABLE client_assertion_jtis (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX client_assertion_jtis_expires ON client_assertion_jtis (expires_at);

-- +goose Down
DROP TABLE client_assertion_jtis;
DROP TABLE revocations;
DROP TABLE issued_tokens;
DROP TABLE signing_keys;
DROP TABLE clients;
DROP TABLE settings;
