-- Rate limits become buckets that refill continuously (see enclosure_policy::rate): the fixed
-- per-minute counters admitted twice the limit across a minute boundary. A bucket's whole
-- state is its theoretical arrival time; the old counters carry nothing worth keeping.
DROP TABLE rate_limits;

CREATE TABLE rate_buckets (
    bucket TEXT PRIMARY KEY,
    tat_us INTEGER NOT NULL
);
CREATE INDEX rate_buckets_by_tat ON rate_buckets (tat_us);
