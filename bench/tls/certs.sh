#!/bin/sh
# Makes an ECDSA P-256 self-signed certificate for localhost and 127.0.0.1 in directory $1
# (cert.pem, key.pem): the one certificate every server of bench/tls uses.
set -eu
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$1/key.pem" -out "$1/cert.pem" 2>/dev/null
