-- Modelux traffic log, PostgreSQL schema 3: each record as one JSON text
-- next to its start time. Binding 17 columns per finished request cost more
-- than the rest of recording together (docs/performance.md), and a dry-run
-- reads whole records anyway. Records from schema 2 are carried over.
CREATE TABLE modelux_traffic_log (
    id     BIGSERIAL PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    record TEXT   NOT NULL
);
CREATE INDEX modelux_traffic_log_at ON modelux_traffic_log (at_ms);
INSERT INTO modelux_traffic_log (at_ms, record)
SELECT at_ms, json_build_object(
    'at_ms', at_ms,
    'request_id', request_id,
    'config_version', config_version,
    'route', route,
    'client', client,
    'stream', stream <> 0,
    'prompt_tokens', prompt_tokens,
    'completion_tokens', completion_tokens,
    'tokens_estimated', tokens_estimated <> 0,
    'max_tokens', max_tokens,
    'attempts', attempts::json,
    'outcome', outcome,
    'status', status,
    'latency_ms', latency_ms,
    'ttft_ms', ttft_ms,
    'served_by', served_by,
    'cost_usd', cost_usd)::text
FROM modelux_traffic ORDER BY at_ms, id;
DROP TABLE modelux_traffic;
