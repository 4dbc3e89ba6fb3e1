-- 0003: high availability. Each instance's automatic-failover and synchronous-replication
-- settings (the JSON form of `HaSettings`; missing keys take their defaults), and the members a
-- failover or switchover left to rejoin as standbys.

ALTER TABLE toygres.instances
    ADD COLUMN ha jsonb NOT NULL DEFAULT '{}'::jsonb;

-- A former primary waiting to be rewound and to stream from the new primary ('rejoining').
ALTER TABLE toygres.members DROP CONSTRAINT members_state_check;
ALTER TABLE toygres.members ADD CONSTRAINT members_state_check
    CHECK (state IN ('creating', 'running', 'fenced', 'rejoining', 'stopped', 'deleting',
                     'deleted', 'failed'));
