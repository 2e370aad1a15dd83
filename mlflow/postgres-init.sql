-- docker-compose.yml mounts this into the postgres service's /docker-entrypoint-initdb.d/.
-- Prefect and MLflow each keep their own alembic_version table, so each gets its own database
-- (the same layout `make up` creates from RECLOOP_DB_URL: <db>_prefect and <db>_mlflow).
CREATE DATABASE recloop_prefect;
CREATE DATABASE recloop_mlflow;
