"""Profanity filter benchmark: better_profanity 0.7.0 against ProfanityFilter.

    python benchmarks/profanity_bench.py [--size N] [--reference-every K]

Runs both on the same generated corpus (tests/unit/profanity_corpus.py) in one process
and prints per-message mean times, the speed-up, the start-up cost of the filter and the
cost of the whole content pipeline (content.render + censor) per message.
better_profanity costs ~1 ms per word, so it is timed on every K-th message only (the
same subset is timed for ours, and the output says so); the total stays well under a
minute on one core.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def per_message(fn: Callable[[str], object], messages: list[str], repeats: int) -> float:
    """Mean seconds per message; the median of ``repeats`` passes, to damp noise."""
    passes = []
    for _ in range(repeats):
        gc.disable()
        start = time.perf_counter()
        for message in messages:
            fn(message)
        passes.append((time.perf_counter() - start) / len(messages))
        gc.enable()
    return statistics.median(passes)


def us(seconds: float) -> str:
    return f"{seconds * 1e6:9.2f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2400, help="corpus size (default 2400)")
    parser.add_argument("--reference-every", type=int, default=2, help="time better_profanity on every K-th message (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="passes for our filter (median is reported)")
    args = parser.parse_args()

    # -- start-up: nothing of better_profanity or the filter is imported yet ---------------
    t0 = time.perf_counter()
    import better_profanity  # noqa: F401  (builds its own default filter on import)

    t1 = time.perf_counter()
    from chat_server.services.profanity import ProfanityFilter

    t1b = time.perf_counter()
    default = ProfanityFilter.default()
    t2 = time.perf_counter()
    room_add = ProfanityFilter.with_terms(blocked=("zork", "bad word"), allowed=("frell",))
    t3 = time.perf_counter()
    room_remove = ProfanityFilter.with_terms(blocked=("zork",), allowed=("hell", "damn"))
    t4 = time.perf_counter()
    cached_lookups = 10_000
    for _ in range(cached_lookups):
        ProfanityFilter.with_terms(("zork", "bad word"), ("frell",))
    t5 = time.perf_counter()

    from better_profanity import profanity as reference

    from chat_server.services.content import render
    from tests.unit.profanity_corpus import build_corpus

    corpus = build_corpus(args.size)
    subset = corpus[:: args.reference_every]
    words = sum(len(m.split()) for m in corpus)
    subset_words = sum(len(m.split()) for m in subset)
    print(
        f"corpus: {len(corpus)} messages, {words} words ({words / len(corpus):.1f} per message), seeded, from tests/unit/profanity_corpus.py"
    )
    print(
        f"timed subset: 1 in every {args.reference_every} messages -> {len(subset)} messages, {subset_words} words "
        f"({subset_words / len(subset):.1f} per message); better_profanity is timed on this subset only, ours on both"
    )
    print()

    # -- equivalence on the subset (the unit tests check the whole corpus) --------------
    ref_start = time.perf_counter()
    expected = [reference.censor(m) for m in subset]
    ref_per_message = (time.perf_counter() - ref_start) / len(subset)
    mismatches = sum(default.censor(m) != e for m, e in zip(subset, expected, strict=True))
    censored = sum(m != e for m, e in zip(subset, expected, strict=True))

    ours_subset = per_message(default.censor, subset, args.repeats)
    ours_corpus = per_message(default.censor, corpus, args.repeats)
    clean = [m for m, e in zip(subset, expected, strict=True) if m == e]
    dirty = [m for m, e in zip(subset, expected, strict=True) if m != e]
    ours_clean = per_message(default.censor, clean, args.repeats)
    ours_dirty = per_message(default.censor, dirty, args.repeats)
    ours_room = per_message(room_add.censor, subset, args.repeats)

    print(f"censor() per message, same {len(subset)} messages ({censored} of them censored), {mismatches} output mismatches:")
    print(
        f"  better_profanity 0.7.0  {us(ref_per_message)}   ({ref_per_message / (subset_words / len(subset)) * 1e3:.2f} ms per word, one pass)"
    )
    print(f"  ProfanityFilter         {us(ours_subset)}   (median of {args.repeats} passes)")
    print(f"  speed-up                {ref_per_message / ours_subset:9.0f} x")
    print(f"  ours, untouched messages {us(ours_clean)}  |  censored messages {us(ours_dirty)}  |  room filter with terms {us(ours_room)}")
    print(f"  ours on the whole corpus ({len(corpus)} messages) {us(ours_corpus)}")
    print()

    def pipeline(raw: str) -> None:
        default.censor(render(raw).content)

    render_only = per_message(render, corpus, 3)
    pipeline_cost = per_message(pipeline, corpus, 3)
    print(f"content pipeline per message, whole corpus ({len(corpus)} messages):")
    print(f"  content.render(raw)                      {us(render_only)}")
    print(
        f"  content.render(raw) + censor(content)    {us(pipeline_cost)}   (censor is {100 * (pipeline_cost - render_only) / pipeline_cost:.0f}% of it)"
    )
    print()

    print("start-up (this process, cold):")
    print(f"  import better_profanity (its own default filter)   {(t1 - t0) * 1e3:7.1f} ms")
    print(f"  import chat_server.services.profanity              {(t1b - t1) * 1e3:7.1f} ms   (mostly the chat_server package)")
    print(f"  build the default filter (first use)               {(t2 - t1b) * 1e3:7.1f} ms   (regexes, index; once per process)")
    print(f"  room filter, default + blocked terms               {(t3 - t2) * 1e3:7.1f} ms   (once per distinct term set, then cached)")
    print(f"  room filter whose allowed terms remove entries     {(t4 - t3) * 1e3:7.1f} ms   (full rebuild, then cached)")
    print(f"  cached room filter lookup (with_terms)             {(t5 - t4) / cached_lookups * 1e6:7.2f} µs")
    assert room_remove.censor("hell") == "hell"

    if mismatches:
        sys.exit(f"{mismatches} mismatches with better_profanity: run tests/unit/test_profanity.py")


if __name__ == "__main__":
    main()
