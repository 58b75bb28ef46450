-- History rows are keyed by a version number instead of their text key and start time, and
-- the key columns compare bytes.
--
-- The primary keys on (environment, id, valid_from) — and on the four text columns of a link —
-- were a second text B-tree written with every version, and no query reads by them: the
-- current-row indexes serve the writes (closing a version) and the loads, the validity
-- indexes the history queries. Each version's start is unique per key because the committer
-- gives every commit a later time than the last. A bigint identity key is appended to in
-- order (the cheapest B-tree insert) and still gives every row the primary key replication
-- and Postgres-compatible distributed engines ask for. Measured on the 2-core test machine:
-- 100 000 object versions insert in 1.03–1.06 s instead of 1.39–1.47 s.
ALTER TABLE objects DROP CONSTRAINT objects_pkey;
ALTER TABLE objects ADD COLUMN version BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

ALTER TABLE links DROP CONSTRAINT links_pkey;
ALTER TABLE links ADD COLUMN version BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

ALTER TABLE cliques DROP CONSTRAINT cliques_pkey;
ALTER TABLE cliques ADD COLUMN version BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

-- Ids, types and environment names are machine identifiers: ordered and compared as bytes
-- ("C"), as SQLite's BINARY collation does, rather than through the database's locale (which
-- copies both strings and calls strcoll for every comparison in the current-row indexes).
-- For UTF-8 text, byte order is code point order: ordered results do not change under C.UTF-8.
-- Measured as above: 0.84–0.91 s instead of 0.93–0.97 s per 100 000 versions.
ALTER TABLE objects
    ALTER COLUMN environment TYPE TEXT COLLATE "C",
    ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE links
    ALTER COLUMN environment TYPE TEXT COLLATE "C",
    ALTER COLUMN link_type TYPE TEXT COLLATE "C",
    ALTER COLUMN source_id TYPE TEXT COLLATE "C",
    ALTER COLUMN target_id TYPE TEXT COLLATE "C";
ALTER TABLE cliques
    ALTER COLUMN environment TYPE TEXT COLLATE "C",
    ALTER COLUMN focal_point TYPE TEXT COLLATE "C";
