-- Modelux traffic log, SQLite schema 4: one row per page, a page being the
-- records of one writer batch that started in the same second, as a JSON
-- array. One row (and index entry) per request cost more instructions than
-- the rest of recording together (docs/performance.md). Records from
-- schema 3 are carried over, one page per second.
CREATE TABLE modelux_traffic_pages (
    id        INTEGER PRIMARY KEY,
    bucket_ms INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    records   TEXT    NOT NULL
);
CREATE INDEX modelux_traffic_pages_bucket ON modelux_traffic_pages (bucket_ms);
INSERT INTO modelux_traffic_pages (bucket_ms, n, records)
SELECT bucket_ms, COUNT(*), '[' || group_concat(record, ',') || ']'
FROM (SELECT (at_ms / 1000) * 1000 AS bucket_ms, record
      FROM modelux_traffic_log ORDER BY at_ms, id)
GROUP BY bucket_ms ORDER BY bucket_ms;
DROP TABLE modelux_traffic_log;
