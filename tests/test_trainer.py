"""The Trainer subclass: the head's own learning rate."""

import pytest

from conftest import make_backbone, toy_task
from suffixtune import Classifier
from suffixtune.training import TrainingArguments
from suffixtune.training.trainer import ClassifierTrainer


@pytest.mark.parametrize("head_learning_rate", [3e-3, None])
def test_head_gets_its_own_learning_rate(tokenizer_dir, tmp_path, head_learning_rate):
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "last-blocks")
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=5e-5, head_learning_rate=head_learning_rate,
                             weight_decay=0.01, eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    optimizer = ClassifierTrainer(model=classifier, args=args).create_optimizer()

    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    assert len(rate) == len(trainable) == sum(len(group["params"]) for group in optimizer.param_groups)
    head = {id(p) for p in classifier.head.parameters()}
    assert {rate[id(p)] for p in trainable if id(p) in head} == {head_learning_rate or 5e-5}
    assert {rate[id(p)] for p in trainable if id(p) not in head} == {5e-5}
    decayed = {id(p) for group in optimizer.param_groups if group["weight_decay"] for p in group["params"]}
    assert id(classifier.head.linear.weight) in decayed and id(classifier.head.linear.bias) not in decayed
