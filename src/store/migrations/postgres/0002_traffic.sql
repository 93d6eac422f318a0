-- Modelux traffic log, PostgreSQL schema 2: one row per finished request, for
-- dry-runs. No prompt or completion text, no key. `attempts` is a JSON array.
CREATE TABLE modelux_traffic (
    id                BIGSERIAL PRIMARY KEY,
    at_ms             BIGINT  NOT NULL,
    request_id        TEXT    NOT NULL,
    config_version    BIGINT  NOT NULL,
    route             TEXT    NOT NULL,
    client            TEXT,
    stream            BIGINT  NOT NULL,
    prompt_tokens     BIGINT  NOT NULL,
    completion_tokens BIGINT  NOT NULL,
    tokens_estimated  BIGINT  NOT NULL,
    max_tokens        BIGINT,
    outcome           TEXT    NOT NULL,
    status            BIGINT  NOT NULL,
    latency_ms        BIGINT  NOT NULL,
    ttft_ms           BIGINT,
    served_by         TEXT,
    cost_usd          DOUBLE PRECISION,
    attempts          TEXT    NOT NULL
);
CREATE INDEX modelux_traffic_at ON modelux_traffic (at_ms);
