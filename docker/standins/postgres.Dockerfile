# Stand-in for the official postgres:<major>-bookworm image, built by scripts/base-images.sh only
# when that image can be neither found nor pulled: Debian's postgresql-<major> package with an
# entrypoint that follows the official image's contract (POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB, PGDATA=/var/lib/postgresql/data, port 5432, scram-sha-256 over the network). It
# runs as the postgres user, uid/gid 999 like the official image, so a volume moves between them.
#checkov:skip=CKV_DOCKER_7:FROM names a build argument whose default (the ARG above) is pinned by tag; checkov cannot resolve it
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
ARG PG_MAJOR=15
ENV PG_MAJOR=${PG_MAJOR} \
    PGDATA=/var/lib/postgresql/data \
    PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The user first, so the package keeps the official image's ids. The package's own cluster
# (/etc/postgresql) is not used: the entrypoint makes one in $PGDATA.
# hadolint ignore=DL3008
RUN groupadd --system --gid 999 postgres \
    && useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql --shell /bin/bash postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update \
    && apt-get install -y --no-install-recommends "postgresql-${PG_MAJOR}" \
    && rm -rf /var/lib/apt/lists/* \
    && install -d -o postgres -g postgres -m 0700 "$PGDATA" \
    && install -d -o postgres -g postgres -m 2775 /var/run/postgresql
# The script is mode 0755 in git (COPY keeps it; --chmod would need BuildKit).
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER 999:999
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=20 \
    CMD ["sh", "-c", "pg_isready -h /var/run/postgresql -U \"${POSTGRES_USER:-postgres}\""]
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
