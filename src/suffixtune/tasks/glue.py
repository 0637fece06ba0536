"""GLUE tasks (Hugging Face config names) and SMS spam, readable from GLUE TSVs, HF parquet or the hub."""

from . import Task, register_task

GLUE = "nyu-mll/glue"
PAIR = "Sentence 1: {sentence1}\nSentence 2: {sentence2}"
NLI = "Premise: {sentence1}\nHypothesis: {sentence2}"


def glue_files(train: tuple[str, ...] = ("train.tsv", "train.parquet")) -> dict[str, tuple[str, ...]]:
    return {"train": train, "validation": ("dev.tsv", "validation.parquet")}


register_task(Task(
    name="sst2", text_columns=("sentence",), label_names=("negative", "positive"),
    label_words=(" negative", " positive"), prompt_text="\nSentiment (positive or negative):",
    files=glue_files(), hub=(GLUE, "sst2"),
))
register_task(Task(
    name="cola", text_columns=("sentence",), label_names=("unacceptable", "acceptable"), metrics=("mcc", "accuracy"),
    label_words=(" no", " yes"), prompt_text="\nIs this sentence grammatical (yes or no)?",
    files=glue_files(), headerless_columns=("source", "label", "original_label", "sentence"), hub=(GLUE, "cola"),
))
register_task(Task(
    name="mrpc", text_columns=("sentence1", "sentence2"), label_names=("not_equivalent", "equivalent"),
    metrics=("f1", "accuracy"), template=PAIR, label_words=(" no", " yes"),
    prompt_text="\nDo both sentences mean the same (yes or no)?",
    files=glue_files(("train.parquet", "train.tsv")),
    rename={"#1 String": "sentence1", "#2 String": "sentence2", "Quality": "label"}, hub=(GLUE, "mrpc"),
))
register_task(Task(
    name="stsb", text_columns=("sentence1", "sentence2"), label_names=None, metrics=("pearson", "spearman"),
    template=PAIR, prompt_text="\nHow similar are the sentences (0 to 5)?",
    files=glue_files(), rename={"score": "label"}, hub=(GLUE, "stsb"),
))
for name, labels, words in [
    ("rte", ("entailment", "not_entailment"), (" yes", " no")),
    ("wnli", ("not_entailment", "entailment"), (" no", " yes")),
]:
    register_task(Task(
        name=name, text_columns=("sentence1", "sentence2"), label_names=labels, template=NLI, label_words=words,
        prompt_text="\nDoes the premise imply the hypothesis (yes or no)?", files=glue_files(), hub=(GLUE, name),
    ))
register_task(Task(
    name="qnli", text_columns=("question", "sentence"), label_names=("entailment", "not_entailment"),
    template="Question: {question}\nSentence: {sentence}", label_words=(" yes", " no"),
    prompt_text="\nDoes the sentence answer the question (yes or no)?", files=glue_files(("train.tsv",)),
    hub=(GLUE, "qnli"),
))
register_task(Task(
    name="mnli", text_columns=("premise", "hypothesis"), label_names=("entailment", "neutral", "contradiction"),
    template="Premise: {premise}\nHypothesis: {hypothesis}", label_words=(" yes", " maybe", " no"),
    prompt_text="\nDoes the premise imply the hypothesis (yes, maybe or no)?",
    files={"train": ("train.tsv",), "validation": ("dev_matched.tsv", "validation_matched.parquet")},
    rename={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}, hub=(GLUE, "mnli"),
))
register_task(Task(
    name="qqp", text_columns=("question1", "question2"), label_names=("not_duplicate", "duplicate"),
    metrics=("f1", "accuracy"), template="Question 1: {question1}\nQuestion 2: {question2}", label_words=(" no", " yes"),
    prompt_text="\nDo both questions ask the same (yes or no)?", files=glue_files(),
    rename={"is_duplicate": "label"}, hub=(GLUE, "qqp"),
))
register_task(Task(
    name="sms_spam", text_columns=("text",), label_names=("ham", "spam"), label_words=(" no", " yes"),
    prompt_text="\nIs this message spam (yes or no)?",
    files={"train": ("train.csv",), "validation": ("validation.csv",), "test": ("test.csv",)},
    rename={"Text": "text", "Label": "label"},
))
