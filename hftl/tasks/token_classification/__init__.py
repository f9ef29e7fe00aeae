"""Token classification (named-entity recognition): a tag per word, IOB2 tags, entity-level metrics.

Data is a list of words and a list of tags per sentence: CoNLL column files (`.txt`/`.conll`), JSON(L) or
parquet files with a tokens and a tags column, saved datasets or Hub datasets. Words are split into
sub-tokens by the checkpoint's fast tokenizer; the first sub-token of a word carries its tag (`align_labels`).
Sentences longer than `data.max_length` sub-tokens are cut into overlapping windows (`data.stride`) and each
word's prediction is taken from the window where it has the most context (`stitch_windows`).

Metrics are entity-level (seqeval, strict IOB2: an entity counts only with its exact span and type), computed
on whole sentences after stitching, during training as in the final evaluation; `predict` on raw text returns
entity spans with character offsets, grouped the way `pipeline("token-classification",
aggregation_strategy="first")` groups them.

One module per step, each of pure functions but the last:

- `reading`: the `data` section, CoNLL and column files, IOB2 checks of the tag sets;
- `windows`: the tokenizer set up for words, sub-token alignment, windows and stitching;
- `entities`: word tags to entity spans of a text;
- `metrics`: seqeval, the report of whole sentences, the error analysis;
- `recipe`: `TokenClassificationRecipe`, wiring them into `hftl.recipe.Recipe` (and registering the task).
"""

from hftl.tasks.token_classification.reading import TokenClassificationData
from hftl.tasks.token_classification.recipe import TokenClassificationRecipe

__all__ = ["TokenClassificationData", "TokenClassificationRecipe"]
