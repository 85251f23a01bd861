#!/usr/bin/env bash
# Mutation testing of the modules that carry firmcast's promises, with
# cargo-mutants (crates.io): each mutant is built and the tests that defend
# that module run against it; a mutant no test fails is a rule no test
# defends. Not part of .ci/run (hours of CPU); run it before a release and
# after changing one of these files.
#
#   tools/mutants.sh [AREA...]      areas: signing catalog worker admission validation
#                                   (default: all, in that order)
#
# On a warm target/ an area runs faster in place (the tree is mutated and
# restored file by file; do not edit src/ meanwhile):
#   cargo mutants --in-place --baseline skip <the area's arguments below>
#
# Each area's results go to mutants.out/<area>/ (outcomes.json, caught.txt,
# missed.txt, timeout.txt, unviable.txt); the summary line per area is
# printed at the end. Every survivor is either killed by a new test or
# explained in README.md ("Mutation testing").
#
# Test scope per area, to fit in a couple of hours on 2 cores: the unit
# tests of the module, plus the integration tests that exercise it (by
# nextest filter); the full suite is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || { echo "install it: cargo install --locked cargo-mutants" >&2; exit 2; }

run() { # run AREA MUTANTS-ARGS... -- TEST-ARGS...
    local area="$1"; shift
    echo "== $area: cargo mutants $*" >&2
    local start=$SECONDS
    # 2: some mutants survived, 3: some timed out; the summary says which.
    local rc=0
    cargo mutants --test-tool nextest --profile mutants --no-shuffle --timeout 300 --build-timeout 600 \
        --output "mutants.out/$area" "$@" || rc=$?
    case $rc in 0 | 2 | 3) ;; *) echo "cargo mutants failed ($rc) in $area" >&2; exit "$rc" ;; esac
    local out="mutants.out/$area/mutants.out"
    printf '%s: caught %s, missed %s, timeout %s, unviable %s (%d min)\n' "$area" \
        "$(wc -l <"$out/caught.txt")" "$(wc -l <"$out/missed.txt")" \
        "$(wc -l <"$out/timeout.txt")" "$(wc -l <"$out/unviable.txt")" \
        $(((SECONDS - start) / 60)) | tee -a mutants.out/summary.txt
}

# Display/Debug and metrics text are not promises; `main` wiring is tested
# end to end by every integration test.
SKIP=(--exclude-re 'impl (std::)?(fmt::)?(Display|Debug)' --exclude-re '::render')

areas=("$@")
[ ${#areas[@]} -gt 0 ] || areas=(signing catalog worker admission validation)
mkdir -p mutants.out
for area in "${areas[@]}"; do
    case "$area" in
        signing)
            run signing -p firmcast-signing "${SKIP[@]}" ;;
        catalog)
            run catalog --file 'src/catalog/**' "${SKIP[@]}" -- \
                -E 'test(/catalog::|api_updates::|tuf_attacks::|rollout::seed/)' ;;
        worker)
            # push/mod.rs: the retry rule both the worker and send_with_retry follow.
            run worker --file src/fanout/worker.rs --file src/fanout/breaker.rs --file src/push/mod.rs "${SKIP[@]}" -- \
                -E 'test(/fanout::breaker|push::tests|push_failures::|push_fanout::(a_cancelled|credential|fan_out_reaches|unsubscribing)/)' ;;
        admission)
            run admission --file src/edge/admission.rs "${SKIP[@]}" -- \
                -E 'test(/edge::admission|limits::/)' ;;
        validation)
            # signing/src/names.rs (product, channel, version rules) is in "signing".
            run validation --file src/api/updates.rs --file src/api/reports.rs "${SKIP[@]}" -- \
                -E 'test(/api::updates|api::reports|api_updates::|rollout::(adoption|the_batch_echoes|malformed_last_day|bad_reports)|fuzz_update_paths::/)' ;;
        *) echo "unknown area $area (signing catalog worker admission validation)" >&2; exit 2 ;;
    esac
done
cat mutants.out/summary.txt
