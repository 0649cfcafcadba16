#!/bin/bash
# Health check for the Kafka stand-in image, under the official image's name and option:
#   kafka-broker-api-versions.sh --bootstrap-server HOST:PORT
# Sends one Kafka ApiVersions (v0) request and exits 0 when the broker answers it (the
# response carries our correlation id), 1 otherwise. (The official tool lives in the
# kafka-tools jar, which the broker's jars do not include.)
set -uo pipefail
[[ "${1:-}" == --bootstrap-server && -n "${2:-}" ]] || { echo "usage: $0 --bootstrap-server HOST:PORT" >&2; exit 2; }
host="${2%:*}" port="${2##*:}"
exec 3<>"/dev/tcp/$host/$port" || exit 1
# size 12 | api_key 18 (ApiVersions) | api_version 0 | correlation_id 7 | client_id "hc"
printf '\x00\x00\x00\x0c\x00\x12\x00\x00\x00\x00\x00\x07\x00\x02hc' >&3
# size (4 bytes) then correlation_id (4 bytes) of the response
answer=$(timeout 5 head -c 8 <&3 | od -An -tx1 | tr -d ' \n')
[[ "${answer:8:8}" == 00000007 ]]
