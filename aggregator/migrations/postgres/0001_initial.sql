-- Calipso aggregator store, PostgreSQL. Times are microseconds since the Unix epoch; bodies are
-- the JSON of the object, link or clique. Versioned tables keep every version with its validity
-- range [valid_from, valid_to); the current version has valid_to NULL.
--
-- valid_from only grows with insertion order (commit times increase), so its index is BRIN:
-- nearly free to maintain, and still what "changed between T1 and T2" scans.

CREATE TABLE environments (
    name   TEXT PRIMARY KEY,
    config TEXT NOT NULL
);

CREATE TABLE objects (
    environment TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    valid_from  BIGINT  NOT NULL,
    valid_to    BIGINT,
    object_type TEXT    NOT NULL,
    host        TEXT,
    stale       BOOLEAN NOT NULL,
    first_seen  BIGINT  NOT NULL,
    last_seen   BIGINT  NOT NULL,
    body        TEXT    NOT NULL,
    PRIMARY KEY (environment, id, valid_from)
);
CREATE UNIQUE INDEX objects_current ON objects (environment, id) WHERE valid_to IS NULL;
CREATE INDEX objects_valid_from ON objects USING brin (valid_from);
CREATE INDEX objects_valid_to ON objects (environment, valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE links (
    environment TEXT   NOT NULL,
    link_type   TEXT   NOT NULL,
    source_id   TEXT   NOT NULL,
    target_id   TEXT   NOT NULL,
    valid_from  BIGINT NOT NULL,
    valid_to    BIGINT,
    state       TEXT   NOT NULL,
    body        TEXT   NOT NULL,
    PRIMARY KEY (environment, link_type, source_id, target_id, valid_from)
);
CREATE UNIQUE INDEX links_current ON links (environment, link_type, source_id, target_id) WHERE valid_to IS NULL;
CREATE INDEX links_valid_from ON links USING brin (valid_from);
CREATE INDEX links_valid_to ON links (environment, valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE cliques (
    environment TEXT   NOT NULL,
    focal_point TEXT   NOT NULL,
    valid_from  BIGINT NOT NULL,
    valid_to    BIGINT,
    body        TEXT   NOT NULL,
    PRIMARY KEY (environment, focal_point, valid_from)
);
CREATE UNIQUE INDEX cliques_current ON cliques (environment, focal_point) WHERE valid_to IS NULL;
CREATE INDEX cliques_valid_from ON cliques USING brin (valid_from);
CREATE INDEX cliques_valid_to ON cliques (environment, valid_to) WHERE valid_to IS NOT NULL;

CREATE TABLE clique_types (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);

CREATE TABLE clique_constraints (
    focal_point_type TEXT NOT NULL,
    environment      TEXT NOT NULL,
    body             TEXT NOT NULL,
    PRIMARY KEY (focal_point_type, environment)
);

CREATE TABLE messages (
    id             BIGSERIAL PRIMARY KEY,
    environment    TEXT,
    level          TEXT   NOT NULL,
    source         TEXT   NOT NULL,
    related_object TEXT,
    text           TEXT   NOT NULL,
    at             BIGINT NOT NULL
);
CREATE INDEX messages_at ON messages (at);

CREATE TABLE agents (
    host          TEXT PRIMARY KEY,
    environment   TEXT   NOT NULL,
    agent_version TEXT   NOT NULL,
    epoch         BIGINT,
    seq           BIGINT NOT NULL,
    state         TEXT   NOT NULL,
    last_seen     BIGINT NOT NULL
);

CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
