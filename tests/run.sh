#!/usr/bin/env bash
# Runs every test of aioq on a fresh machine: formatting, lints, unit and
# integration tests, and a fixed number of fuzz iterations (skipped when
# arguments narrow the test run). As root it installs the Debian packages the tests need
# when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v python3 >/dev/null || need_pkgs+=(python3)
command -v runuser >/dev/null || need_pkgs+=(util-linux)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v script >/dev/null || need_pkgs+=(bsdutils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null \
  || need_pkgs+=(postgresql)
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
command -v npm >/dev/null || need_pkgs+=(nodejs npm)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || need_pkgs+=(nats-server)
command -v redis-server >/dev/null || need_pkgs+=(redis-server)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need_pkgs+=(rabbitmq-server)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_pkgs[@]}"
  else
    echo "missing: ${need_pkgs[*]} (run as root to install them)" >&2
    exit 1
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install --locked cargo-nextest
fi

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps --quiet
cargo nextest run --locked --profile ci "$@"
if [ $# -eq 0 ]; then
  fuzz/run.sh
fi
