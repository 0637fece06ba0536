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


def test_diagnostics_are_the_norms_of_what_the_head_reads_and_of_the_gradients(tokenizer_dir, tmp_path):
    import torch

    from suffixtune.methods.soft_prompt import SoftPromptConfig
    from suffixtune.training.trainer import TrainingDiagnostics

    model, tokenizer = make_backbone("llama", tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(3), "suffix", SoftPromptConfig(prompt_length=4)).train()
    diagnostics = TrainingDiagnostics(classifier)
    seen, head_grads, prompt_grads = [], [], []
    classifier.head.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach()))
    for texts, labels in ((["a fine film", "dull"], [0, 2]), (["wonderful, truly", "no", "meh"], [1, 1, 0])):
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        classifier.zero_grad(set_to_none=True)
        classifier(batch.input_ids, batch.attention_mask, torch.tensor(labels)).loss.backward()
        diagnostics.gradients(classifier)
        head = classifier.head.linear
        head_grads.append(float(torch.cat([head.weight.grad.flatten(), head.bias.grad.flatten()]).norm()))
        prompt_grads.append(float(classifier.method.prompt.grad.norm()))
    summary = diagnostics.summary()

    assert summary["pooled_norm"] == pytest.approx(sum(float(x.norm(dim=-1).mean()) for x in seen) / 2, rel=1e-5)
    assert summary["head_grad_norm"] == pytest.approx(sum(head_grads) / 2, rel=1e-5)
    assert summary["method_grad_norm"] == pytest.approx(sum(prompt_grads) / 2, rel=1e-5)
    assert summary["prompt_norm"] == pytest.approx(float(classifier.method.prompt.detach().norm(dim=-1).mean()), rel=1e-5)
    assert set(summary) == {"pooled_norm", "prompt_norm", "head_grad_norm", "method_grad_norm"}
    assert diagnostics.summary() == {"prompt_norm": summary["prompt_norm"]}  # a new interval starts empty


def test_a_run_at_the_majority_rate_did_not_learn():
    import numpy as np

    from suffixtune.metrics import did_not_learn

    labels = np.array([0] * 60 + [1] * 40)
    names = ("no", "yes")
    def answering(correct_ones):  # "no" everywhere but `correct_ones` of the 40 "yes" rows
        return np.r_[np.zeros(60), np.ones(correct_ones), np.zeros(40 - correct_ones)].astype(int)

    assert "did not learn" in did_not_learn(answering(0), labels, names)  # always the majority: 0.60
    assert "(0.6000): the run did not learn" in did_not_learn(answering(1), labels, names)  # 0.61
    assert did_not_learn(answering(3), labels, names) is None  # 0.63
    assert did_not_learn(labels, labels, names) is None
    assert did_not_learn(np.zeros(10), np.arange(10.0), None) is None  # regression: not judged this way


def test_collapse_is_judged_against_the_labels_and_enough_rows():
    import numpy as np

    from suffixtune.metrics import collapse_reason, non_finite_reason

    names = ("no", "yes")
    assert collapse_reason(np.zeros(4, int), np.array([0, 0, 0, 1]), names) is None  # 3 of 4 right: too few rows to judge
    assert collapse_reason(np.zeros(12, int), np.array([0] * 8 + [1] * 4), names) is None  # 4 rows of the other class
    assert "collapsed to class 'no' for all 12 rows (accuracy 0.5833" in collapse_reason(np.zeros(12, int), np.array([0] * 7 + [1] * 5), names)
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, 100)
    constant = 2.5 + rng.normal(0, 1e-5, 100)
    assert np.corrcoef(constant, scores)[0, 1] != 0  # a correlation of noise, not a result
    assert "collapsed to about 2.5 for all 100 rows" in collapse_reason(constant, scores, None)
    tiny = scores * 2e-8  # labels in [0, 1e-7], predicted well
    assert collapse_reason(tiny + rng.normal(0, 1e-9, 100), tiny, None) is None
    assert collapse_reason(np.r_[np.nan, scores[1:]], scores, None) == "1 of 100 predictions are NaN or infinite"
    assert non_finite_reason(np.array([[0.1, 0.9], [np.nan, 0.2], [np.inf, 0.0]])) == "2 of 3 rows have NaN or infinite outputs"
    assert non_finite_reason(np.array([[0.1, 0.9]])) is None


@pytest.mark.parametrize("head_only_steps", [3, 0.3])
def test_head_only_steps_hold_the_method_at_rate_zero_then_follow_the_schedule(tokenizer_dir, tmp_path, head_only_steps):
    """LP-FT: the head alone for the first 3 of 10 steps (a count, or 0.3 of all steps), then both."""
    model, tokenizer = make_backbone("gpt2", tokenizer_dir)
    classifier = Classifier.build(model, tokenizer, toy_task(2), "suffix")
    args = TrainingArguments(output_dir=str(tmp_path), learning_rate=1e-2, head_only_steps=head_only_steps, warmup_steps=2,
                             lr_scheduler_type="linear", eval_strategy="no", save_strategy="no", load_best_model_at_end=False)
    trainer = ClassifierTrainer(model=classifier, args=args)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(10)
    linear = [min(step / 2, (10 - step) / 8) for step in range(10)]  # warm-up over 2 steps, then down to 0 at 10
    method_rates, head_rates = [], []
    for _ in range(10):
        groups = scheduler.optimizer.param_groups
        method_rates.append(sum(g["lr"] for g in groups if not g.get("head")) / sum(1 for g in groups if not g.get("head")))
        head_rates.append(next(g["lr"] for g in groups if g.get("head")))
        scheduler.optimizer.step()
        scheduler.step()
    assert head_rates == pytest.approx([1e-2 * r for r in linear])
    assert method_rates == pytest.approx([0, 0, 0] + [1e-2 * r for r in linear[3:]])


def test_log_lines_read_as_text_or_as_json():
    import json

    from transformers import TrainerState

    from suffixtune.training.trainer import log_line

    state = TrainerState(global_step=20, max_steps=200, epoch=0.1)
    train = {"loss": 0.55661, "grad_norm": 21.27, "learning_rate": 0.00294, "pooled_norm": 5.6, "epoch": 0.1, "total_flos": 3.0}
    assert log_line(train, state, "text") == "step 20/200, epoch 0.10: loss 0.5566, grad norm 21.27, learning rate 0.00294"
    evaluation = {"eval_loss": 0.39, "eval_accuracy": 0.8, "eval_runtime": 0.17, "eval_samples_per_second": 190.0, "epoch": 1.0}
    assert log_line(evaluation, state, "text") == "step 20/200, epoch 1.00: eval loss 0.39, eval accuracy 0.8"
    assert json.loads(log_line(train, state, "json")) == {"step": 20, "loss": 0.55661, "grad_norm": 21.27, "learning_rate": 0.00294,
                                                         "pooled_norm": 5.6, "epoch": 0.1}
