-- Endpoint ports are the platform's to keep apart, not the CMS's. The local platform binds
-- every port it hands out (the kernel refuses one in use); on Kubernetes every instance has its
-- own Services, all on 5432, so a unique index over all instances let only one instance live.
DROP INDEX IF EXISTS toygres.instances_rw_port_live;
DROP INDEX IF EXISTS toygres.instances_ro_port_live;
