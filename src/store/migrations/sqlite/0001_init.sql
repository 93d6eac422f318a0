-- Modelux config-version store, SQLite schema 1.
-- Every table is prefixed `modelux_` so the store can share a database file.

-- Immutable config versions. `config` is the canonical JSON text (keys
-- sorted, no whitespace) that `sha256` was computed over.
CREATE TABLE modelux_config_versions (
    version    INTEGER PRIMARY KEY,
    created_at TEXT    NOT NULL,
    author     TEXT    NOT NULL,
    message    TEXT    NOT NULL,
    sha256     TEXT    NOT NULL,
    based_on   INTEGER REFERENCES modelux_config_versions (version),
    source     TEXT    NOT NULL CHECK (source IN ('api', 'file')),
    config     TEXT    NOT NULL
);
CREATE INDEX modelux_config_versions_source ON modelux_config_versions (source, version);

-- Exactly one row: the active version (NULL until the first activation).
-- Every write transaction touches this row first, which serializes writers.
CREATE TABLE modelux_config_active (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    version      INTEGER REFERENCES modelux_config_versions (version),
    activated_at TEXT,
    actor        TEXT,
    previous     INTEGER
);
INSERT INTO modelux_config_active (id) VALUES (1);

-- The activation history as an undo stack: an activation pushes, a
-- rollback pops. The top row is always the active version.
CREATE TABLE modelux_config_stack (
    pos     INTEGER PRIMARY KEY AUTOINCREMENT,
    version INTEGER NOT NULL REFERENCES modelux_config_versions (version)
);

-- Append-only audit log.
CREATE TABLE modelux_config_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL CHECK (action IN ('create', 'activate', 'rollback')),
    version      INTEGER NOT NULL,
    from_version INTEGER,
    message      TEXT    NOT NULL
);
