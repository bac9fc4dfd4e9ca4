#!/bin/sh
# Make the development certificates of Rempart in certs/dev/ (DEV ONLY: the keys are public).
#
#   ca.crt / ca.key                 a development CA (trust it in test clients only)
#   localhost.crt / localhost.key   SAN: DNS localhost, IP 127.0.0.1, IP ::1
#   ent-example.crt / .key          SAN: DNS ent.example.test, DNS *.ent.example.test
#
# EC P-256 keys (PKCS#8), valid 10 years. Run from anywhere: ./certs/make-dev-certs.sh
# Existing files are overwritten.
set -eu

DIR="$(cd "$(dirname "$0")" && pwd)/dev"
DAYS=3650
mkdir -p "$DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

newkey() {
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# The CA.
newkey "$DIR/ca.key"
openssl req -x509 -new -key "$DIR/ca.key" -sha256 -days "$DAYS" \
    -subj "/O=Rempart development/CN=Rempart dev CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -addext "subjectKeyIdentifier=hash" \
    -out "$DIR/ca.crt"

# leaf NAME CN SAN
leaf() {
    name="$1"; cn="$2"; san="$3"
    newkey "$DIR/$name.key"
    openssl req -new -key "$DIR/$name.key" -subj "/O=Rempart development/CN=$cn" -out "$TMP/$name.csr"
    cat > "$TMP/$name.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
subjectAltName=$san
EXT
    openssl x509 -req -in "$TMP/$name.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
        -set_serial "0x$(openssl rand -hex 16)" -days "$DAYS" -sha256 \
        -extfile "$TMP/$name.ext" -out "$DIR/$name.crt" 2>/dev/null
    openssl verify -CAfile "$DIR/ca.crt" "$DIR/$name.crt" >/dev/null
}

leaf localhost localhost "DNS:localhost,IP:127.0.0.1,IP:::1"
leaf ent-example ent.example.test "DNS:ent.example.test,DNS:*.ent.example.test"

chmod 644 "$DIR"/*.crt "$DIR"/*.key
echo "development certificates written to $DIR"
