#!/usr/bin/env bash
# Builds the networkd RPM with rpmbuild into ./rpmbuild/ and prints the RPM's path
# (the last line of output).
#
#   bash packaging/rpm/build.sh          # package the working tree (what `make test` tests)
#   bash packaging/rpm/build.sh --head   # package the committed HEAD (git archive)
#
# The source tarball holds the tracked files plus untracked ones that .gitignore does
# not exclude. pip fetches the Python dependencies while the RPM is built; set
# PIP_INDEX_URL / PIP_FIND_LINKS to use a mirror. On hosts whose rpm database does not
# know the build dependencies (Debian), rpmbuild runs with --nodeps.
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"
spec=packaging/rpm/networkd.spec
topdir="$here/rpmbuild"
source_mode=tree
case "${1:-}" in
    --head) source_mode=head ;;
    "") ;;
    *) echo "usage: $0 [--head]" >&2; exit 2 ;;
esac

for tool in rpmbuild rpm tar gzip; do
    command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (apt-get install rpm)" >&2; exit 1; }
done

version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' networkd/__init__.py)
spec_version=$(sed -n 's/^Version:[[:space:]]*//p' "$spec")
if [ -z "$version" ] || [ "$version" != "$spec_version" ]; then
    echo "build.sh: networkd/__init__.py says ${version:-nothing}, $spec says $spec_version:" \
         "bump Version and add a %changelog entry" >&2
    exit 1
fi

rm -rf "$topdir"
mkdir -p "$topdir"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS}
tarball="$topdir/SOURCES/networkd-$version.tar.gz"
prefix="networkd-$version/"
if [ "$source_mode" = head ]; then
    git archive --format=tar.gz --prefix="$prefix" -o "$tarball" HEAD
elif git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Files that exist: a tracked file deleted in the tree is left out.
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | tar --null -T - --transform "s|^|$prefix|" --owner=0 --group=0 -czf "$tarball"
else
    tar --exclude=./.venv --exclude=./rpmbuild --exclude=./.git --exclude='*/__pycache__' \
        --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.hypothesis \
        --transform "s|^\./|$prefix|" --owner=0 --group=0 -czf "$tarball" .
fi
cp "$spec" "$topdir/SPECS/"

nodeps=()
# Debian's rpm database is empty: BuildRequires cannot be checked there.
if ! rpm -q --whatprovides gcc >/dev/null 2>&1; then
    nodeps=(--nodeps)
fi

echo "build.sh: building networkd $version from the $source_mode in $topdir" >&2
start=$SECONDS
rpmbuild -bb "${nodeps[@]}" \
    --define "_topdir $topdir" \
    "$topdir/SPECS/networkd.spec" >"$topdir/build.log" 2>&1 || {
    tail -n 40 "$topdir/build.log" >&2
    echo "build.sh: rpmbuild failed, full log: $topdir/build.log" >&2
    exit 1
}
rpm_path=$(find "$topdir/RPMS" -name "networkd-$version-*.rpm" | head -n 1)
if [ -z "$rpm_path" ]; then
    echo "build.sh: no RPM in $topdir/RPMS, see $topdir/build.log" >&2
    exit 1
fi
echo "build.sh: built in $((SECONDS - start))s, log: $topdir/build.log" >&2
echo "$rpm_path"
