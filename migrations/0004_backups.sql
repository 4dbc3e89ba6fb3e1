-- 0004: backups. Each instance's backup configuration (the JSON form of `BackupConfig`: store
-- URL, the *name* of the secret holding the store's credentials, schedules, retention; never a
-- credential), NULL when backups are off; and every backup taken through the controller.

ALTER TABLE toygres.instances
    ADD COLUMN backup jsonb;

CREATE TABLE toygres.backups (
    id            text PRIMARY KEY,
    instance      text NOT NULL,
    operation_id  text,
    kind          text NOT NULL CHECK (kind IN ('base', 'logical')),
    label         text,
    status        text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'succeeded', 'failed')),
    member        text,
    from_standby  boolean NOT NULL DEFAULT false,
    -- The backup's objects, relative to the store URL (`<instance>/base/<id>`).
    store_path    text,
    raw_bytes     bigint CHECK (raw_bytes >= 0),
    stored_bytes  bigint CHECK (stored_bytes >= 0),
    start_lsn     pg_lsn,
    stop_lsn      pg_lsn,
    timeline      integer CHECK (timeline > 0),
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    error         text,
    verification  jsonb,
    CHECK (finished_at IS NULL OR status IN ('succeeded', 'failed'))
);

CREATE INDEX backups_instance_started ON toygres.backups (instance, started_at DESC);
-- One backup in progress per instance.
CREATE UNIQUE INDEX backups_one_running ON toygres.backups (instance) WHERE status = 'running';
