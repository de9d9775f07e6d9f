#!/bin/sh
# The image's entrypoint: `ringmaster service $RINGMASTER_SERVICE`, with the
# container's settings turned into the service's options.
#
#   RINGMASTER_SERVICE           the service to run (required): job_manager, node_agent, ...
#   RINGMASTER_INSTANCE          its instance name (default: the container's host name)
#   RINGMASTER_CREDENTIALS_FILE  its NATS user file (ringmaster nats-config), or .creds
#   RINGMASTER_TLS_CA_FILE, RINGMASTER_TLS_CERT_FILE, RINGMASTER_TLS_KEY_FILE
#   NATS_URL                     the NATS server(s), comma-separated
#
# Any arguments go to the service (`--help` lists them). With --probe first, it runs
# `ringmaster probe` against this container's own instance instead, with the same
# credentials and any further arguments: exit 0 when alive, and with --readiness
# when ready too (HEALTHCHECK and the Kubernetes liveness and readiness probes).
set -eu

probe=""
if [ "${1:-}" = "--probe" ]; then
    probe=yes
    shift
fi
service="${RINGMASTER_SERVICE:-}"
if [ -z "$service" ]; then
    echo "entrypoint: set RINGMASTER_SERVICE to the service to run" >&2
    exit 2
fi
# Instance names are one subject token: anything else in a host name becomes '-'.
instance="${RINGMASTER_INSTANCE:-$(uname -n | tr -c 'A-Za-z0-9_\n-' '-')}"

if [ -n "$probe" ]; then
    exec ringmaster probe "$service" --instance "$instance" --metrics "$@"
fi

set -- --instance "$instance" "$@"
if [ -n "${RINGMASTER_CREDENTIALS_FILE:-}" ]; then
    set -- --credentials-file "$RINGMASTER_CREDENTIALS_FILE" "$@"
fi
if [ -n "${RINGMASTER_TLS_CA_FILE:-}" ]; then
    set -- --tls-ca-file "$RINGMASTER_TLS_CA_FILE" "$@"
fi
if [ -n "${RINGMASTER_TLS_CERT_FILE:-}" ]; then
    set -- --tls-cert-file "$RINGMASTER_TLS_CERT_FILE" --tls-key-file "${RINGMASTER_TLS_KEY_FILE:-}" "$@"
fi
exec ringmaster service "$service" "$@"
