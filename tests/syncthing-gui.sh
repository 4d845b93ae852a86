#!/usr/bin/env bash
# Assembles Syncthing's own web GUI (Debian's syncthing 1.19) in OUT, laid out as
# Syncthing's `gui/` directory (one subdirectory per theme), for the test that has peerfold
# serve it (tests/it/syncthing_gui.rs). Debian embeds the GUI in its binary, so the files
# come from Debian's source package (apt-get source, with a private deb-src list), and
# bootstrap and fork-awesome from the packages libjs-bootstrap and fonts-fork-awesome, as
# Debian's build puts them in. Does nothing when OUT is complete already.
#
# Usage: tests/syncthing-gui.sh OUT
set -euo pipefail
out=${1:?usage: tests/syncthing-gui.sh OUT}
[ -f "$out/default/index.html" ] && [ -f "$out/default/vendor/bootstrap/js/bootstrap.js" ] && exit 0

for dir in /usr/share/javascript/bootstrap /usr/share/fonts-fork-awesome; do
    if [ ! -d "$dir" ]; then
        echo "tests/syncthing-gui.sh: $dir is missing (apt-get install libjs-bootstrap fonts-fork-awesome)" >&2
        exit 1
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/parts"
cat > "$work/parts/deb-src.sources" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_options=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$work/parts"
    -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
apt-get "${apt_options[@]}" -qq update
(cd "$work" && apt-get "${apt_options[@]}" -qq source --download-only syncthing=1.19.2~ds1-1 >/dev/null)
tar -xJf "$work"/syncthing_*.orig.tar.xz -C "$work" syncthing/gui

rm -rf "$out"
mkdir -p "$(dirname "$out")"
cp -r "$work/syncthing/gui" "$out"
mkdir -p "$out/default/vendor/bootstrap" "$out/default/vendor/fork-awesome"
cp -rL /usr/share/javascript/bootstrap/css /usr/share/javascript/bootstrap/js "$out/default/vendor/bootstrap/"
cp -rL /usr/share/fonts-fork-awesome/css /usr/share/fonts-fork-awesome/fonts "$out/default/vendor/fork-awesome/"
echo "tests/syncthing-gui.sh: Syncthing 1.19's GUI assembled in $out" >&2
