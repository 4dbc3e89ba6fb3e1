-- 0003: high availability. Each instance's automatic-failover and synchronous-replication
-- settings (the JSON form of `HaSettings`; missing keys take their defaults), and the members a
-- failover or switchover left to rejoin as standbys.

ALTER TABLE toygres.instances
    ADD COLUMN ha jsonb NOT NULL DEFAULT '{}'::jsonb;

-- Per standby: whether it may be a synchronous standby (`replication add --mode async` says
-- no), and its own lag bound for the ro endpoint (NULL: the controller's).
ALTER TABLE toygres.members
    ADD COLUMN sync_candidate boolean NOT NULL DEFAULT true,
    ADD COLUMN max_lag_bytes  bigint CHECK (max_lag_bytes >= 0);

-- A former primary waiting to be rewound and to stream from the new primary ('rejoining').
ALTER TABLE toygres.members DROP CONSTRAINT members_state_check;
ALTER TABLE toygres.members ADD CONSTRAINT members_state_check
    CHECK (state IN ('creating', 'running', 'fenced', 'rejoining', 'stopped', 'deleting',
                     'deleted', 'failed'));
