"""Writes the demo sentiment set shipped with hftl (train.tsv, test.tsv).

A small, synthetic, clearly-labelled demo: movie-review-like sentences built from templates, so the
README's main job runs with no download. It is not a benchmark; point the job at real data
(`hftl demo --data ../shared/datasets/sst2`) for numbers worth reporting.

    python hftl/demo_data/generate.py
"""

import random
from pathlib import Path

SUBJECTS = ["the film", "this movie", "the plot", "the acting", "the script", "the soundtrack", "the ending",
            "the cast", "the director's vision", "the dialogue", "the cinematography", "the pacing", "the story"]
POSITIVE = ["is wonderful", "is a delight from start to finish", "moved me to tears in the best way",
            "is sharp, funny and warm", "works beautifully", "is a triumph", "kept me gripped",
            "is charming and clever", "feels fresh and alive", "is genuinely moving", "is not bad at all",
            "never fails to surprise", "is among the year's best", "left me smiling"]
NEGATIVE = ["is a mess", "is dull and lifeless", "bored me to tears", "is clumsy and forced", "falls flat",
            "is a disaster", "drags on forever", "is not worth your time", "feels stale and tired",
            "is painfully predictable", "never comes together", "is a waste of a good cast",
            "is hard to sit through", "left me cold"]
OPENERS = ["", "honestly, ", "frankly ", "i think ", "in the end ", "overall, ", "sadly ", "to be fair, "]


def sentences(rng, predicates, n):
    return [f"{rng.choice(OPENERS)}{rng.choice(SUBJECTS)} {rng.choice(predicates)} ." for _ in range(n)]


def write(path: Path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{label}\n" for s, label in rows), encoding="utf-8")


def main(n_train=480, n_test=160, seed=0):
    rng = random.Random(seed)
    here = Path(__file__).parent
    for name, n in (("train.tsv", n_train), ("test.tsv", n_test)):
        rows = [(s, "positive") for s in sentences(rng, POSITIVE, n // 2)]
        rows += [(s, "negative") for s in sentences(rng, NEGATIVE, n // 2)]
        rng.shuffle(rows)
        write(here / name, rows)


if __name__ == "__main__":
    main()
