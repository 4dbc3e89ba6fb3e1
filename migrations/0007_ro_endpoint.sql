-- 0007: the ro endpoint's rule per instance (issue 16). `ro` holds the JSON form of
-- `RoSettings` once an operator changes it (NULL: what the create request gave, in `spec`, or
-- the defaults); `ro_view` holds where the last health round left the ro endpoint: each
-- standby's state and whether ro fell back to the primary (the JSON form of `RoEndpointView`,
-- settings aside).
ALTER TABLE toygres.instances
    ADD COLUMN ro      jsonb,
    ADD COLUMN ro_view jsonb;
