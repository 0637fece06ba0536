"""The E2E NLG task (Novikova et al. 2017): a restaurant's meaning representation -> a description of it."""

from __future__ import annotations

import re

from ..errors import DataError
from . import RENDERERS, Task, register_task

E2E_FIELD = r"\s*([^\[\],]+?)\s*\[([^\]]*)\]\s*"
E2E_MEANING = re.compile(rf"{E2E_FIELD}(,{E2E_FIELD})*")


def render_e2e(meaning: str) -> str:
    """An E2E meaning representation as text: `name[The Eagle], food[French]` -> `name : The Eagle | food : French`."""
    if not E2E_MEANING.fullmatch(meaning):
        raise DataError(f"not an E2E meaning representation (attribute[value], ...): {meaning!r}")
    return " | ".join(f"{key} : {value}" for key, value in re.findall(E2E_FIELD, meaning))


RENDERERS["e2e"] = render_e2e

# The official train split is not available here: train on the dev set less a tenth of its MRs (the validation
# slice, all references of an MR on one side), report on the test set.
register_task(Task(
    name="e2e", kind="generation", text_columns=("mr",), target_column="ref", label_names=None, render="e2e",
    metrics=("bleu", "rouge_l"), template="Restaurant: {mr}\nDescription:", prompt_text=" Describe the restaurant in one sentence:",
    files={"train": ("devset.csv",), "test": ("testset_w_refs.csv",)}, held_out=0.1,
))
