#!/usr/bin/env bash
# Runs every check and test of the workspace. On a fresh machine it first installs the brokers
# the bus tests start (nats-server, redis-server, mosquitto, rabbitmq-server) from the distribution's packages.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }
have nats-server || missing+=(nats-server)
have redis-server || missing+=(redis-server)
have rabbitmq-server || missing+=(rabbitmq-server)
have mosquitto || missing+=(mosquitto)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
cargo test --workspace --all-features --locked

# The benchmark program in quick mode, to keep it compiling and working; timings are printed,
# never asserted (a debug build on a busy machine says nothing about speed).
cargo run -p psrpc-benches --locked -- --quick > /dev/null
cargo run -p psrpc-benches --locked --bin durable -- --quick > /dev/null
cargo run -p psrpc-benches --locked --bin cluster -- --quick > /dev/null
cargo run -p psrpc-benches --locked --bin batch -- --quick > /dev/null
cargo run -p psrpc-benches --locked --bin discovery -- --quick > /dev/null
