#!/bin/sh
# pip inside a Docker build, with an optional extra CA (build secret `extra_ca`, e.g. a TLS-intercepting
# proxy's root). The combined bundle lives in /tmp for this one command and is deleted afterwards: no layer
# keeps it. $PIP is the pip to run (default: the image's venv pip); SGPO_EXTRA_CA_FILE moves the secret.
#   RUN --mount=type=secret,id=extra_ca --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
#       sh /tmp/sgpo-pip.sh install ...
set -eu
PIP=${PIP:-pip}
EXTRA_CA=${SGPO_EXTRA_CA_FILE:-/run/secrets/extra_ca}
if [ -s "$EXTRA_CA" ]; then
  bundle=$(mktemp /tmp/sgpo-ca.XXXXXX)
  trap 'rm -f "$bundle"' EXIT
  python3 -c "import pip._vendor.certifi as c; print(open(c.where()).read())" > "$bundle" 2>/dev/null \
    || cat /etc/ssl/certs/ca-certificates.crt > "$bundle"
  cat "$EXTRA_CA" >> "$bundle"
  PIP_CERT=$bundle $PIP "$@"
else
  $PIP "$@"
fi
