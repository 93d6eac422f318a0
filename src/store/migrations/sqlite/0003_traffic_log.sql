-- Modelux traffic log, SQLite schema 3: each record as one JSON text next to
-- its start time. Binding 17 columns per finished request cost more than the
-- rest of recording together (docs/performance.md), and a dry-run reads
-- whole records anyway. Records from schema 2 are carried over.
CREATE TABLE modelux_traffic_log (
    id     INTEGER PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    record TEXT    NOT NULL
);
CREATE INDEX modelux_traffic_log_at ON modelux_traffic_log (at_ms);
INSERT INTO modelux_traffic_log (at_ms, record)
SELECT at_ms, json_object(
    'at_ms', at_ms,
    'request_id', request_id,
    'config_version', config_version,
    'route', route,
    'client', client,
    'stream', json(CASE WHEN stream <> 0 THEN 'true' ELSE 'false' END),
    'prompt_tokens', prompt_tokens,
    'completion_tokens', completion_tokens,
    'tokens_estimated', json(CASE WHEN tokens_estimated <> 0 THEN 'true' ELSE 'false' END),
    'max_tokens', max_tokens,
    'attempts', json(attempts),
    'outcome', outcome,
    'status', status,
    'latency_ms', latency_ms,
    'ttft_ms', ttft_ms,
    'served_by', served_by,
    'cost_usd', cost_usd)
FROM modelux_traffic ORDER BY at_ms, id;
DROP TABLE modelux_traffic;
