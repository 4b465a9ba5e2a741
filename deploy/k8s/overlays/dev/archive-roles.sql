-- The archive's login users, run by the database's owner with psql (compose's `archive-roles`,
-- scripts/dev; the Kubernetes dev overlay carries a copy, CloudNativePG declares them itself):
-- order-service's projection writes as `orderflow_projection`, its API reads as
-- `orderflow_reader`, and the schema migrations grant each what it needs and no more. The
-- passwords come from the environment; running it again sets them again (compose and
-- scripts/dev run it on every start; the Kubernetes dev overlay on the first start only).
-- The passwords are in the statements below: keep them out of the server's log, whatever its
-- settings (needs a superuser, as the owner is where this runs).
SET log_statement = 'none';
SET log_min_error_statement = 'panic';

\getenv projection_password ARCHIVE_PROJECTION_PASSWORD
\getenv reader_password ARCHIVE_READER_PASSWORD

SELECT format('CREATE ROLE %I', role)
  FROM unnest(ARRAY['orderflow_projection', 'orderflow_reader']) AS role
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role)
\gexec

ALTER ROLE orderflow_projection WITH LOGIN PASSWORD :'projection_password';
ALTER ROLE orderflow_reader WITH LOGIN PASSWORD :'reader_password';
