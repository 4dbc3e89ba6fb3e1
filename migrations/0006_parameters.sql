-- Desired Postgres parameters per instance (issue 15): what operators set through
-- `PUT /v1/instances/{name}/parameters`; the instance's actor applies them to every member
-- (operation `parameters`). A reset deletes the row: the setting goes back to Postgres's default.
CREATE TABLE toygres.instance_parameters (
    instance   text NOT NULL REFERENCES toygres.instances (name) ON DELETE CASCADE,
    name       text NOT NULL,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance, name)
);
