#!/bin/sh
# Sign a release dir: sign_release.sh DIR KEY FILE...
#
# KEY is the release key's private half (PEM, ECDSA P-256), never kept in the repository. In DIR:
# install.sh gets the public half in its RELEASE_KEY heredoc; SHA256SUMS lists FILE... and
# install.sh; SHA256SUMS.sig is the ECDSA-SHA256 signature of SHA256SUMS, DER, as one line of
# base64: `openssl dgst -sha256 -verify pub.pem -signature <(base64 -d SHA256SUMS.sig)` and
# `cosign verify-blob --key pub.pem --signature SHA256SUMS.sig --insecure-ignore-tlog=true
# SHA256SUMS` both accept it (tests/e2e/test_cosign.py).
# The public key (release-key.pub) is written beside them, and the signature is checked back.
set -eu
[ "$#" -ge 3 ] || { echo "usage: $0 DIR KEY FILE..." >&2; exit 2; }
dir=$1
[ -f "$2" ] || { echo "$0: no release key at $2" >&2; exit 2; }
key="$(cd "$(dirname "$2")" && pwd)/$(basename "$2")"
shift 2
curve=$(openssl pkey -in "$key" -noout -text 2>/dev/null | sed -n 's/^ASN1 OID: //p')
[ "$curve" = prime256v1 ] || {
    echo "$0: $key is not an ECDSA P-256 private key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)" >&2
    exit 2
}
pub="$dir/release-key.pub"
openssl pkey -in "$key" -pubout -out "$pub"
# The heredoc between the markers is replaced by the public key.
awk -v pub="$pub" '
    /^# RELEASE_KEY_BEGIN/ { print; while ((getline line < pub) > 0) print line; skip = 1; next }
    /^# RELEASE_KEY_END/ { skip = 0 }
    !skip { print }
' "$dir/install.sh" >"$dir/install.sh.tmp"
grep -q 'BEGIN PUBLIC KEY' "$dir/install.sh.tmp" || {
    echo "$0: $dir/install.sh has no RELEASE_KEY_BEGIN/END markers" >&2
    exit 1
}
chmod 0755 "$dir/install.sh.tmp"
mv -f "$dir/install.sh.tmp" "$dir/install.sh"
cd "$dir"
sha256sum "$@" install.sh >SHA256SUMS.tmp
mv -f SHA256SUMS.tmp SHA256SUMS
sha256sum --quiet -c SHA256SUMS
openssl dgst -sha256 -sign "$key" SHA256SUMS | openssl base64 -A >SHA256SUMS.sig
echo >>SHA256SUMS.sig
openssl base64 -d -A -in SHA256SUMS.sig -out SHA256SUMS.der
openssl dgst -sha256 -verify release-key.pub -signature SHA256SUMS.der SHA256SUMS >/dev/null
rm -f SHA256SUMS.der
