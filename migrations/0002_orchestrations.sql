-- 0002: what the durable orchestrations record: the instance's actor and desired replicas, each
-- member's health as the instance actor last saw it, and the lookups the API and the actor need.

-- The instance actor's orchestration id (one per incarnation of the instance) and the operation
-- that created it.
ALTER TABLE toygres.instances
    ADD COLUMN actor_id      text,
    ADD COLUMN replicas      integer NOT NULL DEFAULT 0 CHECK (replicas BETWEEN 0 AND 5),
    ADD COLUMN last_check_at timestamptz;

-- A member's health as the last probe saw it.
ALTER TABLE toygres.members
    ADD COLUMN health     text NOT NULL DEFAULT 'unknown'
                          CHECK (health IN ('unknown', 'healthy', 'unhealthy')),
    ADD COLUMN last_error text;

-- Operations of one kind, newest first (metrics, the CLI).
CREATE INDEX operations_kind_created ON toygres.operations (kind, created_at DESC);

-- Live instances, for the actor check at start-up.
CREATE INDEX instances_live ON toygres.instances (name) WHERE state NOT IN ('deleted');
