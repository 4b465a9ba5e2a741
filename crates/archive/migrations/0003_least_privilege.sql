-- Least privilege. The user that migrates owns the schema; order-service connects as two others:
-- its projection writes the read model (`orderflow_projection`), its API only reads it
-- (`orderflow_reader`). Neither may change the schema or drop a table.
--
-- The roles are created here without LOGIN when they do not exist yet (the migrating user then
-- needs CREATEROLE); a deployment that manages roles itself (CloudNativePG's managed roles, a
-- DBA) creates them beforehand, with LOGIN and a password, and only the grants below run.
-- Every later migration that adds a table grants on it the same way.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderflow_projection') THEN
        CREATE ROLE orderflow_projection NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'orderflow_reader') THEN
        CREATE ROLE orderflow_reader NOLOGIN;
    END IF;
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO orderflow_projection;
GRANT SELECT ON orders TO orderflow_reader;
-- Both check, before their first query, that the schema is the one their build knows.
GRANT SELECT ON _sqlx_migrations TO orderflow_projection, orderflow_reader;
