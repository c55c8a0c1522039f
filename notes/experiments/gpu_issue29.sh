#!/usr/bin/env bash
# Issue 29 on a lent GPU: SmolLM2-135M searched for perplexity and retrieval together (LongRoPE2 as published,
# two objectives), then the chosen spec against YaRN and dynamic NTK on the test split. Only `longrope` commands.
#
#   notes/experiments/gpu_issue29.sh OUT            # on the GPU machine: SmolLM2 at 16k (~12 min on an H200, est.)
#   notes/experiments/gpu_issue29.sh OUT --dry-run  # the same commands on the tiny model at 4x, on CPU, in minutes
#
# Data: the search reads validation documents and plants its needles there (pareto.choose picks the shipped
# member from the front by the rule written in README before the run); perplexity is on test documents (prose
# and code), passkey on the natural template with seed 1 (no search or choice uses either). Every command writes
# its own files under OUT, so a run stopped at the device's limit keeps every finished step; re-running the
# script resumes the search and redoes only the evaluations whose report is missing.
set -euo pipefail
out=${1:?usage: gpu_issue29.sh OUT [--dry-run]}
mkdir -p "$out"
if [[ "${2:-}" == "--dry-run" ]]; then
    model=tiny length=1024 search=(--population 8 --parents 4 --mutations 4 --crossovers 4 --generations 1 --docs 2)
    trials=4 docs=1 template=code device=cpu
else
    model=smollm2 length=16384 search=(--population 16 --parents 8 --mutations 8 --crossovers 8 --generations 4 --docs 3)
    trials=40 docs=2 template=natural device=cuda
fi
started=$SECONDS
step() { echo "[$((SECONDS - started)) s] $*" >&2; }

step "search: LongRoPE2 (critical pair searched), perplexity + needle perplexity, $model at $length"
longrope search --model "$model" --target-length "$length" --objective ppl+needle --longrope2 --search-critical \
    "${search[@]}" --device "$device" --out "$out/search" --no-progress $([[ -f "$out/search/search_state.json" ]] && echo --resume)
spec="$out/search/best_spec.json"

methods=(--method yarn --method dynamic_ntk --method "$spec")
for corpus in prose stdlib; do
    [[ -f "$out/ppl-$corpus/ppl.json" ]] && continue
    step "perplexity on $corpus test documents"
    longrope eval ppl --model "$model" "${methods[@]}" --lengths "$length" --corpus "$corpus" --n-docs "$docs" \
        --device "$device" --out "$out/ppl-$corpus" --quiet
done
if [[ ! -f "$out/passkey/passkey.json" ]]; then
    step "passkey: $trials trials, $template template, seed 1"
    longrope eval passkey --model "$model" "${methods[@]}" --lengths "$length" --trials "$trials" \
        --template "$template" --seed 1 --device "$device" --out "$out/passkey" --quiet
fi
step "done: $out/search/front.png, $out/ppl-*/ppl.md, $out/passkey/passkey.md"
