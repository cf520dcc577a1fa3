#!/usr/bin/env bash
# Write the secrets docker-compose.yml requires into a .env file (mode 0600) beside it, random, once:
#   bash deploy/compose/make-secrets.sh [path/to/.env]
# A variable the file already sets is kept (rotate one by deleting its line and running this again, then
# `docker compose up -d` to recreate the services). Values are never printed.
set -euo pipefail
ENV_FILE=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/.env"}
umask 077
touch "$ENV_FILE"
chmod 600 "$ENV_FILE"
for var in SGPO_SERVICE_TOKEN SGPO_REDIS_PASSWORD SGPO_JUDGE_API_KEY SGPO_GENERATOR_API_KEY; do
  if ! grep -q "^${var}=" "$ENV_FILE"; then
    printf '%s=%s\n' "$var" "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >>"$ENV_FILE"
    echo "wrote $var to $ENV_FILE"
  fi
done
