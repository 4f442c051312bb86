#!/bin/sh
# Fetch Debian sid's cosign for tests/e2e/test_cosign.py: fetch_cosign.sh [CACHE]
#
# Bookworm has no cosign package; sid has. The package is fetched with `apt-get download` through
# a private apt state (its own sources.list naming sid, lists, cache and an empty dpkg status under
# CACHE/apt), so the system's apt sources and packages stay as they are; apt checks the .deb
# against sid's signed InRelease (debian-archive-keyring). It is unpacked with dpkg-deb -x into
# CACHE/<version>, and CACHE/current points at it: CACHE/current/usr/bin/cosign.
# CACHE is $WARREN_COSIGN_CACHE or /var/cache/warren-test/cosign (outside the clone). A version
# already unpacked is not fetched again; without the network, a cached cosign is kept.
set -eu
cache=${1:-${WARREN_COSIGN_CACHE:-/var/cache/warren-test/cosign}}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
mirror=${WARREN_COSIGN_MIRROR:-http://deb.debian.org/debian}
[ -f "$keyring" ] || { echo "$0: no $keyring: apt-get install debian-archive-keyring" >&2; exit 2; }

apt=$cache/apt
mkdir -p "$apt/sources.list.d" "$apt/preferences.d" "$apt/state/lists/partial" \
    "$apt/cache/archives/partial" "$apt/download"
# apt downloads as its _apt user: the private dirs must be reachable by it.
chmod 0755 "$cache" "$apt" "$apt/state" "$apt/cache" "$apt/download"
! id _apt >/dev/null 2>&1 || chown _apt "$apt/download"
echo "deb [signed-by=$keyring] $mirror sid main" >"$apt/sources.list"
: >"$apt/status"
aptopts="-o Dir::Etc::SourceList=$apt/sources.list -o Dir::Etc::SourceParts=$apt/sources.list.d
 -o Dir::Etc::Preferences=$apt/preferences -o Dir::Etc::PreferencesParts=$apt/preferences.d
 -o Dir::State=$apt/state -o Dir::State::status=$apt/status -o Dir::Cache=$apt/cache
 -o Acquire::Languages=none -o APT::Architectures=$(dpkg --print-architecture)"

current=$cache/current/usr/bin/cosign
# shellcheck disable=SC2086 # aptopts is a list of words
if ! apt-get $aptopts -qq --error-on=any update; then
    if [ -x "$current" ]; then
        echo "$0: cannot reach $mirror: keeping the cached $(readlink "$cache/current")" >&2
        exit 0
    fi
    echo "$0: cannot read sid's package lists from $mirror (WARREN_COSIGN_MIRROR=URL for another mirror)" >&2
    exit 1
fi
# shellcheck disable=SC2086
version=$(apt-cache $aptopts show --no-all-versions cosign | sed -n 's/^Version: //p')
[ -n "$version" ] || { echo "$0: sid lists no cosign package" >&2; exit 1; }
dest=$cache/$version
if [ ! -x "$dest/usr/bin/cosign" ]; then
    rm -rf "$apt/download"/* "$dest.tmp"
    # shellcheck disable=SC2086
    (cd "$apt/download" && apt-get $aptopts -qq download "cosign=$version")
    dpkg-deb -x "$apt/download"/cosign_*.deb "$dest.tmp"
    "$dest.tmp/usr/bin/cosign" version >/dev/null 2>&1 || {
        echo "$0: cosign $version does not run on this host" >&2
        exit 1
    }
    rm -rf "$apt/download"/*
    mv "$dest.tmp" "$dest"
fi
ln -sfn "$version" "$cache/current.tmp"
mv -T "$cache/current.tmp" "$cache/current"
# Older versions go: the cache holds the one the tests run.
for old in "$cache"/*; do
    case ${old##*/} in apt | current | "$version") ;; *) rm -rf "$old" ;; esac
done
echo "cosign $version: $cache/current/usr/bin/cosign"
