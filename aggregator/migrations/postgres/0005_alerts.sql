-- Alert rules and silences, per environment; each a JSON body (webhook secrets sealed).
CREATE TABLE alert_rules (
    id          TEXT   NOT NULL PRIMARY KEY,
    environment TEXT   NOT NULL,
    body        TEXT   NOT NULL
);
CREATE TABLE silences (
    id          TEXT   NOT NULL PRIMARY KEY,
    environment TEXT   NOT NULL,
    ends_at     BIGINT NOT NULL,
    body        TEXT   NOT NULL
);
