-- +goose Up
-- User -> client delegation grants (package grants). Times are unix seconds;
-- lists are JSON arrays stored as TEXT; max_lifetime is in seconds (0 = server default).
CREATE TABLE grants (
    id                 TEXT PRIMARY KEY,
    user_issuer        TEXT NOT NULL,
    user_subject       TEXT NOT NULL,
    client_id          TEXT NOT NULL,
    scopes             TEXT NOT NULL,
    resources          TEXT NOT NULL DEFAULT '[]',
    max_depth          INTEGER NOT NULL DEFAULT 0,
    max_lifetime       BIGINT NOT NULL DEFAULT 0,
    allowed_sub_agents TEXT NOT NULL DEFAULT '[]',
    expires_at         BIGINT NOT NULL,
    status             TEXT NOT NULL,
    version            BIGINT NOT NULL,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL,
    revoked_at         BIGINT NOT NULL DEFAULT 0
);
-- At most one active grant per (user, client): the second create conflicts here,
-- which is what makes concurrent creates safe on every node.
CREATE UNIQUE INDEX grants_one_active ON grants (user_issuer, user_subject, client_id) WHERE status = 'active';
CREATE INDEX grants_user ON grants (user_issuer, user_subject, created_at);
CREATE INDEX grants_client ON grants (client_id, created_at);
CREATE INDEX grants_created ON grants (created_at);

-- History: who did what to a grant and when. seq is the grant's version after the change.
CREATE TABLE grant_events (
    grant_id TEXT NOT NULL REFERENCES grants (id),
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    action   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (grant_id, seq)
);

-- +goose Down
DROP TABLE grant_events;
DROP TABLE grants;
