"""Cost of the content pipeline per message (sanitise + spam + profanity + HTML), next to
better_profanity's ``censor()`` alone.

    python benchmarks/pipeline_bench.py [--size N] [--reference-every K] [--json]

Calls ``chat_server.services`` directly on the seeded chat corpus of
``tests/unit/profanity_corpus.py`` (the one ``profanity_bench.py`` uses), stage by stage in
the order ``MessageService.send`` runs them: ``content.to_plain_text`` (sanitise),
``SpamDetector.check_text`` (links, repeated characters), the profanity filter on the
lookalike-folded text (``fold_confusables`` + ``ProfanityFilter.censor``), the repeat rule
against the sender's recent messages (``check_repeats`` + ``remember`` on the in-memory
store, 50 senders taking turns) and ``find_mentions`` + ``to_html``.  Rate limits, bans and
storage are not part of it.  better_profanity costs ~1 ms per word, so it is timed on every
K-th message only (and ours on the same subset for the ratio).  ``run.py`` runs this pinned
to one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.profanity_bench import per_message  # noqa: E402  (one timing loop for both benchmarks)


def measure(size: int = 1200, reference_every: int = 4, repeats: int = 3) -> dict[str, Any]:
    from better_profanity import profanity as reference

    from chat_server.errors import ChatError
    from chat_server.services import content
    from chat_server.services.confusables import fold_confusables
    from chat_server.services.profanity import ProfanityFilter
    from chat_server.services.spam import MemoryRecentStore, SpamDetector, SpamRules
    from tests.unit.profanity_corpus import build_corpus

    corpus = build_corpus(size)
    subset = corpus[::reference_every]
    words = sum(len(m.split()) for m in corpus) / len(corpus)
    profanity = ProfanityFilter.default()
    spam = SpamDetector(SpamRules(), MemoryRecentStore())
    loop = asyncio.new_event_loop()
    senders = [f"user{i}" for i in range(50)]
    turn = {"i": 0}

    def sanitise(raw: str) -> str:
        return content.to_plain_text(raw)

    def spam_text(text: str) -> None:
        try:
            spam.check_text(text)
        except ChatError:
            pass

    spans_of = getattr(profanity, "profane_spans", None)

    def censor(text: str) -> str:
        # What MessageGuard does: find matches on the lookalike-folded copy (same length)
        # and replace those spans of the original.
        folded = fold_confusables(text)
        if spans_of is None:
            return profanity.censor(folded)
        out = text
        for start, end in reversed(list(spans_of(folded))):
            out = out[:start] + "****" + out[end:]
        return out

    def repeats_rule(text: str) -> None:
        user = senders[turn["i"] % len(senders)]
        turn["i"] += 1

        async def run() -> None:
            try:
                await spam.check_repeats(user, text)
            except ChatError:
                return
            await spam.remember(user, text)

        loop.run_until_complete(run())

    def html(text: str) -> str:
        return content.to_html(text, {m: m for m in content.find_mentions(text)})

    plain = [sanitise(m) for m in corpus]
    stages = {
        "sanitise": per_message(sanitise, corpus, repeats),
        "spam_text": per_message(spam_text, plain, repeats),
        "profanity": per_message(censor, plain, repeats),
        "repeats": per_message(repeats_rule, plain, repeats),
        "html": per_message(html, plain, repeats),
    }

    def whole(raw: str) -> None:
        text = sanitise(raw)
        spam_text(text)
        text = censor(text)
        repeats_rule(text)
        html(text)

    total = per_message(whole, corpus, repeats)
    total_subset = per_message(whole, subset, repeats)
    censor_subset = per_message(lambda m: censor(sanitise(m)), subset, repeats)
    start = time.perf_counter()
    for m in subset:
        reference.censor(m)
    reference_censor = (time.perf_counter() - start) / len(subset)
    loop.close()
    return {
        "messages": len(corpus),
        "words_per_message": words,
        "subset": len(subset),
        "stages_us": {k: v * 1e6 for k, v in stages.items()},
        "pipeline_us": total * 1e6,
        "pipeline_subset_us": total_subset * 1e6,
        "sanitise_censor_subset_us": censor_subset * 1e6,
        "better_profanity_censor_us": reference_censor * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--reference-every", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    result = measure(args.size, args.reference_every, args.repeats)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['messages']} messages, {result['words_per_message']:.1f} words each")
    for stage, cost in result["stages_us"].items():
        print(f"  {stage:<10} {cost:9.1f} µs")
    print(f"  pipeline   {result['pipeline_us']:9.1f} µs per message")
    print(f"  better_profanity.censor alone {result['better_profanity_censor_us']:9.1f} µs per message "
          f"(on {result['subset']} messages; our whole pipeline on them: {result['pipeline_subset_us']:.1f} µs)")


if __name__ == "__main__":
    main()
