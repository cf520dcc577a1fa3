#!/bin/sh
# pip inside a Docker build, with an optional extra CA (build secret `extra_ca`, e.g. a TLS-intercepting
# proxy's root). The combined bundle lives in /tmp for this one command and is deleted afterwards: no layer
# keeps it. $PIP is the pip to run (default: the image's venv pip).
#   RUN --mount=type=secret,id=extra_ca --mount=type=bind,source=deploy/docker/pip.sh,target=/tmp/sgpo-pip.sh \
#       sh /tmp/sgpo-pip.sh install ...
set -eu
PIP=${PIP:-pip}
if [ -s /run/secrets/extra_ca ]; then
  bundle=$(mktemp /tmp/sgpo-ca.XXXXXX)
  trap 'rm -f "$bundle"' EXIT
  python3 -c "import pip._vendor.certifi as c; print(open(c.where()).read())" > "$bundle" 2>/dev/null \
    || cat /etc/ssl/certs/ca-certificates.crt > "$bundle"
  cat /run/secrets/extra_ca >> "$bundle"
  PIP_CERT=$bundle $PIP "$@"
else
  $PIP "$@"
fi
