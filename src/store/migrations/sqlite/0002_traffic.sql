-- Modelux traffic log, SQLite schema 2: one row per finished request, for
-- dry-runs. No prompt or completion text, no key. `attempts` is a JSON array.
CREATE TABLE modelux_traffic (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms             INTEGER NOT NULL,
    request_id        TEXT    NOT NULL,
    config_version    INTEGER NOT NULL,
    route             TEXT    NOT NULL,
    client            TEXT,
    stream            INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    tokens_estimated  INTEGER NOT NULL,
    max_tokens        INTEGER,
    outcome           TEXT    NOT NULL,
    status            INTEGER NOT NULL,
    latency_ms        INTEGER NOT NULL,
    ttft_ms           INTEGER,
    served_by         TEXT,
    cost_usd          REAL,
    attempts          TEXT    NOT NULL
);
CREATE INDEX modelux_traffic_at ON modelux_traffic (at_ms);
