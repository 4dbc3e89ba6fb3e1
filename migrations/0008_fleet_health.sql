-- 0008: the health-check history for a fleet (issue 17). Nothing reads it by instance and time:
-- it is written in batches and pruned by a periodic sweep, by count per member (newest ids
-- kept) and by age. The indexes are the ones those two deletes need.
DROP INDEX IF EXISTS toygres.health_checks_instance_at;
DROP INDEX IF EXISTS toygres.health_checks_member_at;
CREATE INDEX health_checks_member_id ON toygres.health_checks (instance, member, id DESC);
CREATE INDEX health_checks_at ON toygres.health_checks (at);
