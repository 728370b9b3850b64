#!/usr/bin/env bash
# Checks the example Prometheus alert rules the package ships with promtool: their syntax,
# and that they fire when they should (alerts-test.yml). promtool comes from Debian's
# prometheus package, unpacked into a temporary directory, not installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/astegni-promtool.XXXXXX)
trap 'rm -rf "$dir"' EXIT
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
    (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root prometheus >/dev/null)
    dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root"
    promtool=$dir/root/usr/bin/promtool
fi
"$promtool" check rules "$here/../../packaging/prometheus-alerts.yml"
(cd "$here" && "$promtool" test rules alerts-test.yml)
