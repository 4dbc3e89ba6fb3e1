-- An instance whose data is being replaced by a restore of its own backup ('restoring').
ALTER TABLE toygres.instances DROP CONSTRAINT instances_state_check;
ALTER TABLE toygres.instances ADD CONSTRAINT instances_state_check
    CHECK (state IN ('creating', 'running', 'restoring', 'deleting', 'deleted', 'failed'));
