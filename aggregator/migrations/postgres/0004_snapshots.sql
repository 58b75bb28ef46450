-- Named snapshots: points in an environment's history that retention keeps answerable (every
-- version in force at a snapshot's time survives compaction).
CREATE TABLE snapshots (
    environment TEXT COLLATE "C" NOT NULL,
    name        TEXT             NOT NULL,
    at          BIGINT           NOT NULL,
    body        TEXT             NOT NULL,
    PRIMARY KEY (environment, name)
);
CREATE INDEX snapshots_at ON snapshots (environment, at);
