-- Modelux traffic log, PostgreSQL schema 4: one row per page, a page being
-- the records of one writer batch that started in the same second, as a
-- JSON array. One row (and index entry) per request cost more than the rest
-- of recording together (docs/performance.md). Records from schema 3 are
-- carried over, one page per second.
CREATE TABLE modelux_traffic_pages (
    id        BIGSERIAL PRIMARY KEY,
    bucket_ms BIGINT NOT NULL,
    n         BIGINT NOT NULL,
    records   TEXT   NOT NULL
);
CREATE INDEX modelux_traffic_pages_bucket ON modelux_traffic_pages (bucket_ms, id);
INSERT INTO modelux_traffic_pages (bucket_ms, n, records)
SELECT (at_ms / 1000) * 1000, COUNT(*), '[' || string_agg(record, ',' ORDER BY at_ms, id) || ']'
FROM modelux_traffic_log
GROUP BY (at_ms / 1000) * 1000 ORDER BY 1;
DROP TABLE modelux_traffic_log;
