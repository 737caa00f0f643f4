-- +goose Up
-- Policy bundles (package policies/registry). A bundle is stored only after it
-- compiled and its own tests passed; rows are never updated. files is a JSON
-- object (path -> source), test_report the JSON policies.TestReport, sha256 the
-- engine's digest of the files. Times are unix seconds.
CREATE TABLE policy_bundles (
    version     TEXT PRIMARY KEY,
    files       TEXT NOT NULL,
    author      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    test_report TEXT NOT NULL,
    sha256      TEXT NOT NULL
);

-- Which bundle is active: the row with the highest seq. Rows are only
-- appended, so the table is also the history that rollback walks. action is
-- 'activate', 'rollback' or 'bootstrap' (the bundle a node started with when
-- nothing was recorded yet).
CREATE TABLE policy_activations (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    version      TEXT NOT NULL REFERENCES policy_bundles (version),
    activated_by TEXT NOT NULL,
    at           BIGINT NOT NULL,
    action       TEXT NOT NULL DEFAULT 'activate'
);

-- The decision log (package policies/decisionlog): one row per token request
-- that reached a decision. at is unix MILLISECONDS; list columns are JSON
-- arrays; error is the OAuth error code the request ended with ('' when a
-- token was issued); input is the JSON policy input (verified claims, never a token), ''
-- when no policy ran. Rows are pruned after policies.decision_retention.
CREATE TABLE decisions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             BIGINT NOT NULL,
    client_id      TEXT NOT NULL,
    subject        TEXT NOT NULL,
    subject_issuer TEXT NOT NULL,
    actors         TEXT NOT NULL DEFAULT '[]',
    grant_id       TEXT NOT NULL DEFAULT '',
    grant_type     TEXT NOT NULL DEFAULT '',
    requested      TEXT NOT NULL DEFAULT '[]',
    audiences      TEXT NOT NULL DEFAULT '[]',
    allowed        INTEGER NOT NULL,
    reasons        TEXT NOT NULL DEFAULT '[]',
    issued         TEXT NOT NULL DEFAULT '[]',
    error          TEXT NOT NULL DEFAULT '',
    bundle_version TEXT NOT NULL DEFAULT '',
    eval_us        BIGINT NOT NULL DEFAULT 0,
    input          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX decisions_at ON decisions (at);
CREATE INDEX decisions_client ON decisions (client_id, id);
CREATE INDEX decisions_subject ON decisions (subject, id);

-- +goose Down
DROP TABLE decisions;
DROP TABLE policy_activations;
DROP TABLE policy_bundles;
