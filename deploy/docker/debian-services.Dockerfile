# Redis and Prometheus from Debian packages, for machines that cannot pull redis:7 and prom/prometheus from
# Docker Hub (scripts/compose-e2e.sh builds them on a debootstrap base). They behave like the official
# images as docker-compose.yml uses them: `command` is redis-server's argv / prometheus' flags, data in /data
# and /prometheus, `redis-cli ping` and `wget .../-/ready` as health checks.
#   docker build -f deploy/docker/debian-services.Dockerfile --target redis      -t sgpo-local/redis deploy/docker
#   docker build -f deploy/docker/debian-services.Dockerfile --target prometheus -t sgpo-local/prometheus deploy/docker
# Select them with REDIS_IMAGE / PROMETHEUS_IMAGE (docker-compose.yml).
ARG DEBIAN_IMAGE=debian:bookworm-slim

FROM ${DEBIAN_IMAGE} AS redis
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && mkdir -p /data && chown redis:redis /data \
 && printf '%s\n' '#!/bin/sh' \
      '# As the official image: other containers may connect (no protected mode); arguments go to redis-server.' \
      'if [ "${1#-}" != "$1" ]; then set -- redis-server "$@"; fi' \
      'if [ "$1" = redis-server ]; then set -- "$@" --protected-mode no; fi' \
      'exec "$@"' > /usr/local/bin/redis-entrypoint \
 && chmod 0755 /usr/local/bin/redis-entrypoint
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint"]
CMD ["redis-server"]

FROM ${DEBIAN_IMAGE} AS prometheus
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus wget \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && mkdir -p /prometheus /etc/prometheus && chown prometheus:prometheus /prometheus
WORKDIR /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
