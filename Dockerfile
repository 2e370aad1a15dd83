# One image for the prefect-server, prefect-worker and mlflow-server services of
# docker-compose.yml: the project installed with the same pins as `make install`.
FROM python:3.11-slim

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    RECLOOP_REPO_DIR=/app \
    GOMP_SPINCOUNT=30000 \
    MKL_CBWR=AUTO,STRICT \
    RECLOOP_HOME=/data/recloop

# git: tasks.tracking records the code version when a checkout is mounted.
# gcc, libc6-dev: models/kernels compiles its C kernels (built below, into the image's cache).
RUN apt-get update && apt-get install -y --no-install-recommends git gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# pip<24: pip 24+ rejects merlin-dataloader 23.8's metadata (see Makefile).
# CPU torch from the PyTorch CPU index; everything else pinned by requirements.lock.
# psycopg 3: MLflow's PostgreSQL backend needs a synchronous driver (SQLAlchemy 2.1's default).
COPY pyproject.toml requirements.lock README.md ./
COPY flows ./flows
COPY tasks ./tasks
COPY models ./models
COPY feature_store ./feature_store
COPY prefect.yaml ./
RUN python -m pip install 'pip<24' \
    && python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu \
         -c requirements.lock -e . 'psycopg[binary]==3.3.6'
RUN python -m models.kernels

RUN mkdir -p /data/recloop
EXPOSE 4200 5000
CMD ["recloop", "--help"]
