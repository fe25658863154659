#!/usr/bin/env bash
# The test command (README Quickstart, and what .ci/run calls): install, fetch test fixtures, run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash install.sh
# System fixtures: Fashion-MNIST IDX files and an OpenSSH server for the ssh-runner test.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    need=()
    [ -d /usr/share/fashion-mnist ] || dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || need+=(dataset-fashion-mnist)
    command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
    if [ ${#need[@]} -gt 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
fi
exec .venv/bin/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider "$@"
