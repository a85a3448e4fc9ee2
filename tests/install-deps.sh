#!/usr/bin/env bash
# Installs the real components the tests run against (Debian packages), when missing.
# As root it installs them; otherwise it names what to install and the tests that need
# them are skipped with that reason.
set -euo pipefail
need=()
command -v promtool >/dev/null || need+=(prometheus)
[ -x /usr/lib/nagios/plugins/check_load ] || need+=(monitoring-plugins-basic)
command -v redis-server >/dev/null || need+=(redis-server)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v openssl >/dev/null || need+=(openssl)
command -v prometheus >/dev/null || need+=(prometheus)
command -v amtool >/dev/null || need+=(prometheus-alertmanager)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v chromium >/dev/null || need+=(chromium)
command -v smartctl >/dev/null || need+=(smartmontools)
[ -x /lib/systemd/systemd-journal-remote ] || need+=(systemd-journal-remote)
command -v node >/dev/null || need+=(nodejs)
command -v sudo >/dev/null || need+=(sudo)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
    echo "tests need Debian packages: ${need[*]} (sudo apt-get install ${need[*]})" >&2
fi
