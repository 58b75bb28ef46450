-- The API's tables. Bodies are JSON; the columns beside them are what queries select on.

-- Local accounts (password_hash is an argon2 PHC string) and the role grants of every user,
-- LDAP users included (their password stays in the directory).
CREATE TABLE users (
    username   TEXT PRIMARY KEY,
    body       TEXT NOT NULL
);

-- Only the SHA-256 of a token is kept: a copy of the database does not hand out sessions.
CREATE TABLE tokens (
    token_hash TEXT   PRIMARY KEY,
    username   TEXT   NOT NULL,
    expires_at BIGINT NOT NULL,
    body       TEXT   NOT NULL
);
CREATE INDEX tokens_username ON tokens (username);

CREATE TABLE scans (
    id           TEXT   PRIMARY KEY,
    environment  TEXT   NOT NULL,
    requested_at BIGINT NOT NULL,
    status       TEXT   NOT NULL,
    body         TEXT   NOT NULL
);
CREATE INDEX scans_requested ON scans (environment, requested_at);

CREATE TABLE scheduled_scans (
    id          TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    body        TEXT NOT NULL
);

CREATE INDEX messages_environment_at ON messages (environment, at);
