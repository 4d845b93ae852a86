#!/usr/bin/env bash
# The README's test command: installs what the integration tests need, then runs every test.
#
# The tests run real programs: Debian's `syncthing` (its `syncthing cli` against our REST
# API, and a Syncthing device using our discovery server), `stdiscosrv` (Syncthing's
# discovery server, which our daemon announces to), `redis-server` (the discovery server's
# shared store), `curl` (lookups at those servers), `setpriv` (util-linux: commands as
# `nobody`, so file permissions bite when run as root), `mount` (a small tmpfs for the
# full-disk test; needs root), `ip` and `tc` (iproute2: the network namespaces of the discovery
# and relay tests, and rate limits on their links; needs root), `nft` (nftables: NAT
# routers, packet loss and firewall rules inside those namespaces), `strelaysrv`
# (Syncthing's relay server, which our daemons sync through), `tcpdump` (records what
# our relay sees, to check it is only ciphertext), `conntrack` (flushes a NAT router's
# mappings under a hole-punched path), `syncthingctl` (syncthingtray: Syncthing's
# command-line client, driven against our daemons) and `python3` with `venv` (a venv for
# Syncthing's Python clients from PyPI: python-syncthing, syncthingmanager; pip reaches
# PyPI), `chromium` and `chromedriver` (chromium-driver: a real headless browser for the web
# GUI's tests, driven over WebDriver), `libjs-bootstrap` and `fonts-fork-awesome` (with
# Syncthing's source package, fetched by tests/syncthing-gui.sh: Syncthing's own GUI, which
# a test has peerfold serve). On a Debian machine that lacks a package, this installs it with apt-get when it
# runs as root (as CI does), and otherwise says which package to install and stops: a test
# that needs it would fail anyway.
#
# Extra arguments go to `cargo test` (e.g. `tests/run.sh -p peerfold-engine`).
set -euo pipefail
cd "$(dirname "$0")/.."

# command -> the Debian package that provides it
declare -A needed=(
    [syncthing]=syncthing
    [stdiscosrv]=syncthing-discosrv
    [redis-server]=redis-server
    [setpriv]=util-linux
    [mount]=mount
    [ip]=iproute2
    [curl]=curl
    [nft]=nftables
    [tc]=iproute2
    [strelaysrv]=syncthing-relaysrv
    [tcpdump]=tcpdump
    [conntrack]=conntrack
    [syncthingctl]=syncthingtray
    [python3]=python3
    [chromium]=chromium
    [chromedriver]=chromium-driver
)
# Installed without their recommendations (syncthingtray's would bring a desktop's worth).
light=(syncthingtray chromium chromium-driver libjs-bootstrap fonts-fork-awesome)
missing=()
for command in "${!needed[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("${needed[$command]}")
done
# The PyPI clients' test makes a venv (Debian splits ensurepip out of python3).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# Syncthing's own GUI, served by peerfold in a test, takes these from Debian as its build does.
[ -d /usr/share/javascript/bootstrap ] || missing+=(libjs-bootstrap)
[ -d /usr/share/fonts-fork-awesome ] || missing+=(fonts-fork-awesome)
# tests/syncthing-gui.sh unpacks Syncthing's source tarball (.tar.xz).
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "tests/run.sh: installing ${missing[*]} (Debian packages the tests run)" >&2
        apt-get update -qq
        full=() bare=()
        for package in "${missing[@]}"; do
            if [[ " ${light[*]} " == *" $package "* ]]; then bare+=("$package"); else full+=("$package"); fi
        done
        if [ "${#full[@]}" -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${full[@]}" >/dev/null
        fi
        if [ "${#bare[@]}" -gt 0 ]; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${bare[@]}" >/dev/null
        fi
    else
        echo "tests/run.sh: the tests need these Debian packages: ${missing[*]}" >&2
        echo "  install them (sudo apt-get install ${missing[*]}) or run this as root" >&2
        exit 1
    fi
fi

# Syncthing 1.19's web GUI from Debian's source package (tests/it/syncthing_gui.rs serves
# it from peerfold); a failure here fails that test only, saying why.
tests/syncthing-gui.sh "${CARGO_TARGET_DIR:-target}/syncthing-gui" ||
    echo "tests/run.sh: could not assemble Syncthing's GUI (see above)" >&2

exec cargo test --workspace --locked "$@"
