"""Every task layout in ../shared/data reads; bad files fail with the file, row and column named."""

import numpy as np
import pytest

from conftest import DATA_DIR, toy_task
from suffixtune.errors import ConfigError, DataError
from suffixtune.metrics import compute_metrics
from suffixtune.tasks import get_task
from suffixtune.tasks.data import custom_task, encode_rows, json_lines, load_split, longest_first, prefix, tokenize

EXPECTED_ROWS = {  # from ../shared/data/PROVENANCE.md
    ("sst2", "train"): 67349, ("sst2", "validation"): 872,
    ("cola", "train"): 8551, ("cola", "validation"): 1043,
    ("mrpc", "train"): 3668, ("mrpc", "validation"): 408,
    ("rte", "train"): 2490, ("rte", "validation"): 277,
    ("stsb", "train"): 5749, ("stsb", "validation"): 1500,
    ("wnli", "train"): 635, ("wnli", "validation"): 71,
    ("qnli", "validation"): 5463,
    ("sms_spam", "train"): 1045, ("sms_spam", "validation"): 149, ("sms_spam", "test"): 300,
}


@pytest.mark.parametrize(("task", "split"), sorted(EXPECTED_ROWS))
def test_glue_layouts_read(task, split):
    rows = load_split(get_task(task), split, data_dir=DATA_DIR / task)
    assert len(rows.texts) == len(rows.labels) == EXPECTED_ROWS[task, split]
    if get_task(task).is_regression:
        assert min(rows.labels) == 0.0 and max(rows.labels) == 5.0
    else:
        assert set(rows.labels) == set(range(get_task(task).num_labels))


@pytest.mark.parametrize("task", ["rte", "cola", "mrpc", "stsb", "sst2"])
def test_glue_tsv_equals_hf_parquet(task):
    spec = get_task(task)
    tsv = load_split(spec, "validation", file=DATA_DIR / task / "dev.tsv")
    parquet = load_split(spec, "validation", file=DATA_DIR / task / "validation.parquet")
    assert tsv.labels == pytest.approx(parquet.labels, abs=1e-6)  # HF stores STS-B scores as float32
    assert tsv.texts == parquet.texts


def test_pair_template_is_applied():
    rows = load_split(get_task("rte"), "validation", data_dir=DATA_DIR / "rte")
    assert rows.texts[0].startswith("Premise: ") and "\nHypothesis: " in rows.texts[0]


def test_a_file_given_overrides_the_tasks_own(tmp_path):
    mine = custom(tmp_path, "sentence,label\nmine,1\n")
    split = load_split(get_task("sst2"), "train", data_dir=DATA_DIR / "sst2", file=mine)  # --data DIR --train FILE
    assert split.texts == ["mine"] and split.labels == [1] and split.source == str(mine)


def test_cola_with_a_header_and_a_byte_order_mark_reads_as_without(tmp_path):
    rows = "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\ngj04\t0\t*\tThe more we study verbs.\n"
    plain, marked = tmp_path / "plain.tsv", tmp_path / "marked.tsv"
    plain.write_text(rows)
    marked.write_bytes(("\ufeffsource\tlabel\toriginal_label\tsentence\n" + rows).encode("utf-8"))
    csv_plain, csv_header = tmp_path / "plain.csv", tmp_path / "header.csv"
    csv_plain.write_text(rows.replace("\t", ","))
    csv_header.write_text("source,label,original_label,sentence\n" + rows.replace("\t", ","))
    for path in (plain, marked, csv_plain, csv_header):
        split = load_split(get_task("cola"), "train", file=path)
        assert split.texts == ["The sailors rode the breeze clear of the rocks.", "The more we study verbs."], path
        assert split.labels == [1, 0]


def test_texts_that_read_like_missing_values_stay_texts(tmp_path):
    path = custom(tmp_path, "sentence,label\nNA,1\nnull,0\nNone,1\nnan,0\n")
    assert load_split(get_task("sst2"), "train", file=path).texts == ["NA", "null", "None", "nan"]


def test_missing_train_file_lists_what_is_there():
    with pytest.raises(DataError, match=r"no train file for task 'qnli'.*found \['dev.tsv', 'validation.parquet'\]"):
        load_split(get_task("qnli"), "train", data_dir=DATA_DIR / "qnli")


def test_a_missing_data_directory_is_named(tmp_path):
    with pytest.raises(DataError, match=r"nope: no train file for task 'sst2'; expected one of .* \(no such directory\)$"):
        load_split(get_task("sst2"), "train", data_dir=tmp_path / "nope")


def test_json_lines_from_bytes_and_from_text_name_the_bad_line():
    assert list(json_lines(['{"a": 1}', "  ", "[2]"], "stdin")) == [(1, {"a": 1}), (3, [2])]
    assert list(json_lines([b'\xef\xbb\xbf{"a": 1}\n', b'"b"\n'], "f.jsonl")) == [(1, {"a": 1}), (2, "b")]
    with pytest.raises(DataError, match=r"^f.jsonl line 2: not UTF-8 \(byte 0xe9 at column 11\)$"):
        list(json_lines([b'{"a": 1}\n', '{"a": "caf\u00e9"}\n'.encode("latin-1")], "f.jsonl"))


def test_a_lone_surrogate_is_named_where_it_is(tmp_path, tokenizer_dir):
    path = custom(tmp_path, '{"sentence": "fine", "label": 1}\n{"sentence": "\\ud800 great", "label": 0}\n', "train.jsonl")
    with pytest.raises(DataError, match=r"train.jsonl line 2, column 'sentence': character 0 \('\\ud800'\) is a lone surrogate"):
        load_split(get_task("sst2"), "train", file=path)  # pyarrow's UnicodeEncodeError before
    with pytest.raises(DataError, match=r"^text 2, field 'sentence1': character 3 \('\\udce9'\) is a lone surrogate"):
        encode_rows(get_task("rte"), [{"sentence1": "a", "sentence2": "b"}, {"sentence1": "caf\udce9", "sentence2": "b"}],
                    gpt2_tokenizer(tokenizer_dir), 16)  # the tokenizer's TypeError before


def custom(tmp_path, text, name="train.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_missing_column_lists_available(tmp_path):
    path = custom(tmp_path, "sentence,label\nhello,0\nbye,1\n")
    task = custom_task(path, "text", None, "label", regression=False)
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) \['text'\]; available columns are \['sentence', 'label'\]"):
        load_split(task, "train", file=path)


def test_unknown_label_names_row_and_column(tmp_path):
    train = custom(tmp_path, "text,label\na,pos\nb,neg\n")
    validation = custom(tmp_path, "text,label\na,pos\nb,neutral\n", "validation.csv")
    task = custom_task(train, "text", None, "label", regression=False)
    assert task.label_names == ("neg", "pos")
    with pytest.raises(DataError, match=r"validation.csv: row 2, column 'label': unknown label 'neutral'; expected one of \['neg', 'pos'\]"):
        load_split(task, "validation", file=validation)
    indices = custom(tmp_path, "text,label\na,1\nb,0\n", "indices.csv")  # named classes may be given by index
    assert load_split(task, "validation", file=indices).labels == [1, 0]
    with pytest.raises(DataError, match=r"row 2, column 'label': unknown label '2'; expected one of \['neg', 'pos'\] or an index 0..1$"):
        load_split(task, "validation", file=custom(tmp_path, "text,label\na,1\nb,2\n", "indices.csv"))


def test_mixed_label_kinds(tmp_path):
    train = custom(tmp_path, "text,label\na,1\nb,positive\n")
    with pytest.raises(DataError, match="mixes label names and numbers"):
        custom_task(train, "text", None, "label", regression=False)
    with pytest.raises(DataError, match=r"mixes label names and numbers \(\['1', '2', 'nan'\]\)"):  # 'nan' is a name, not a number
        custom_task(custom(tmp_path, "text,label\na,1\nb,nan\nc,2\n", "nan.csv"), "text", None, "label", regression=False)
    validation = custom(tmp_path, "sentence,label\na,0\nb,positive\n", "validation.csv")
    with pytest.raises(DataError, match=r"mixes label names and indices \(row 1: '0', row 2: 'positive'\)"):
        load_split(get_task("sst2"), "validation", file=validation)
    validation = custom(tmp_path, "sentence,label\na,positive\nb,negative\nc,1\n", "validation.csv")
    with pytest.raises(DataError, match=r"mixes label names and indices \(row 1: 'positive', row 3: '1'\)"):
        load_split(get_task("sst2"), "validation", file=validation)


def test_integer_labels_and_single_class(tmp_path):
    task = custom_task(custom(tmp_path, "text,label\na,2\nb,10\nc,2\n"), "text", None, "label", regression=False)
    assert task.label_names == ("2", "10")
    with pytest.raises(DataError, match="has one label value"):
        custom_task(custom(tmp_path, "text,label\na,x\nb,x\n", "one.csv"), "text", None, "label", regression=False)


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(DataError, match="empty.csv: file is empty"):
        load_split(get_task("sst2"), "train", file=custom(tmp_path, "", "empty.csv"))
    with pytest.raises(DataError, match="header.csv: file has a header but no rows"):
        load_split(get_task("sst2"), "train", file=custom(tmp_path, "sentence,label\n", "header.csv"))


def test_empty_text_names_row(tmp_path):
    path = custom(tmp_path, "sentence\tlabel\nfine\t1\n  \t0\n", "train.tsv")
    with pytest.raises(DataError, match=r"train.tsv: row 2, column 'sentence' is empty"):
        load_split(get_task("sst2"), "train", file=path)


def test_custom_pairs_read_both_columns_and_custom_scores_report_correlations(tmp_path):
    path = custom(tmp_path, "premise,hypothesis,label\nA man sleeps.,Someone rests.,yes\nIt rains.,The sun is out.,no\n")
    task = custom_task(path, "premise", "hypothesis", "label", regression=False)
    split = load_split(task, "train", file=path)
    assert task.text_columns == ("premise", "hypothesis") and split.labels == [1, 0]
    assert "A man sleeps." in split.texts[0] and "Someone rests." in split.texts[0]
    scores = custom(tmp_path, "text,score\na,0.5\nb,2.0\nc,1.0\n", "scores.csv")
    task = custom_task(scores, "text", None, "score", regression=True)
    labels = np.array(load_split(task, "train", file=scores).labels)
    assert compute_metrics(task.metrics, 2 * labels + 1, labels) == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}


def test_regression_needs_numbers(tmp_path):
    path = custom(tmp_path, "text,score\na,1.5\nb,high\n")
    task = custom_task(path, "text", None, "score", regression=True)
    with pytest.raises(DataError, match=r"row 2, column 'score': 'high' is not a number"):
        load_split(task, "train", file=path)
    for bad, row in (("nan", 2), ("inf", 3), ("-Infinity", 1)):  # float() reads all three; MSE and Pearson cannot
        scores = ["1.5", "0.5", "2"]
        scores[row - 1] = bad
        path = custom(tmp_path, "text,score\n" + "".join(f"t{i},{s}\n" for i, s in enumerate(scores)), "nonfinite.csv")
        with pytest.raises(DataError, match=rf"nonfinite.csv: row {row}, column 'score': '{bad}' is not a finite number"):
            load_split(task, "train", file=path)


def test_unknown_task_and_file_type(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'sst2'"):
        get_task("sst-2")
    with pytest.raises(DataError, match="unsupported file type '.xlsx'"):
        load_split(get_task("sst2"), "train", file=custom(tmp_path, "x", "data.xlsx"))


def test_tokenize_cuts_long_texts(tokenizer_dir, caplog):
    from transformers import GPT2TokenizerFast

    from suffixtune.tasks.data import Split

    tokenizer = GPT2TokenizerFast.from_pretrained(tokenizer_dir)
    exact = " ".join(["word"] * 10)  # "word" and nine " word": exactly 10 tokens, kept whole
    rows = [{"text": "word " * 50}, {"text": "short"}, {"text": exact}]
    dataset = tokenize(Split(rows, [0, 1, 0], "mem.csv", toy_task(2)), tokenizer, max_length=10)
    assert dataset["length"] == [10, 1, 10] and tokenizer.decode(dataset["input_ids"][2]) == exact
    assert dataset["labels"] == [0, 1, 0]
    assert "mem.csv: 1 of 3 rows are longer than 10 tokens and were cut" in caplog.text


def gpt2_tokenizer(tokenizer_dir):
    from transformers import GPT2TokenizerFast

    return GPT2TokenizerFast.from_pretrained(tokenizer_dir)


def test_longest_first_keeps_what_the_tokenizers_library_keeps(tokenizer_dir):
    import random

    from tokenizers import Tokenizer

    tokenizer, rng = gpt2_tokenizer(tokenizer_dir), random.Random(0)
    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split() * 2
    for _ in range(300):
        first, second = (" ".join(words[: rng.randint(1, len(words))]) for _ in range(2))
        budget = rng.randint(0, 60)
        backend.enable_truncation(budget, strategy="longest_first")
        encoding = backend.encode(first, second, add_special_tokens=False)
        pieces = tokenizer([first, second], add_special_tokens=False, return_offsets_mapping=True)
        keep = longest_first([len(ids) for ids in pieces.input_ids], budget)
        assert keep == [encoding.sequence_ids.count(0), encoding.sequence_ids.count(1)], (first, second, budget)
        for column, text in enumerate((first, second)):  # the text kept is the text of the tokens kept
            kept = [i for i, sequence in zip(encoding.ids, encoding.sequence_ids, strict=True) if sequence == column]
            assert prefix(text, pieces, column, keep[column], tokenizer) == tokenizer.decode(kept), (text, budget)


def test_a_long_pair_is_cut_inside_its_columns_never_in_the_template(tokenizer_dir):
    tokenizer, task = gpt2_tokenizer(tokenizer_dir), get_task("rte")  # "Premise: {sentence1}\nHypothesis: {sentence2}"
    premise = " ".join(["The committee met again on Tuesday."] * 30)
    short = {"sentence1": "It rains.", "sentence2": "The street is wet."}
    ids, counts = encode_rows(task, [{"sentence1": premise, "sentence2": "The cat sat on the mat."}, short], tokenizer, 40)
    text = tokenizer.decode(ids[0])
    assert text.startswith("Premise: The committee met again") and text.endswith("\nHypothesis: The cat sat on the mat.")
    assert 38 <= len(ids[0]) <= 40 < counts[0] == len(tokenizer(f"Premise: {premise}\nHypothesis: The cat sat on the mat.").input_ids)
    assert ids[1] == tokenizer("Premise: It rains.\nHypothesis: The street is wet.").input_ids and counts[1] == len(ids[1])

    ids, _ = encode_rows(task, [{"sentence1": premise, "sentence2": premise}], tokenizer, 40)
    kept = [tokenizer(part).input_ids for part in tokenizer.decode(ids[0]).removeprefix("Premise: ").split("\nHypothesis: ")]
    assert len(kept) == 2 and abs(len(kept[0]) - len(kept[1])) <= 1 and premise.startswith(tokenizer.decode(kept[1]))


@pytest.mark.parametrize("bos", [False, True])
def test_a_cut_pair_fills_max_length_with_or_without_a_bos_token(tokenizer_dir, bos):
    from transformers import GPT2TokenizerFast

    tokenizer, task = GPT2TokenizerFast.from_pretrained(tokenizer_dir, add_bos_token=bos), get_task("rte")
    row = {"sentence1": " ".join(["The committee met again on Tuesday."] * 30), "sentence2": "The cat sat on the mat. " * 10}
    for max_length in (24, 40, 64):
        ids, _ = encode_rows(task, [row], tokenizer, max_length)
        assert len(ids[0]) == max_length and ids[0].count(tokenizer.bos_token_id) == bos and (ids[0][0] == 50256) == bos
        premise, _, hypothesis = tokenizer.decode(ids[0], skip_special_tokens=True).partition("\nHypothesis: ")
        assert len(tokenizer(premise.removeprefix("Premise: ")).input_ids) - len(tokenizer(hypothesis).input_ids) in (-1, 0, 1)
    short = {"sentence1": "It rains.", "sentence2": "The street is wet."}  # not cut: tokenized as the tokenizer itself does
    ids, _ = encode_rows(task, [short], tokenizer, 64)
    assert ids[0] == [50256] * bos + tokenizer("Premise: It rains.\nHypothesis: The street is wet.", add_special_tokens=False).input_ids


@pytest.mark.parametrize(("task_name", "split", "joint"), [("rte", "train", "\nHypothesis: "), ("rte", "validation", "\nHypothesis: "),
                                                           ("qnli", "validation", "\nSentence: ")])
def test_real_pairs_cut_to_128_tokens_keep_both_sentences(tokenizer_dir, task_name, split, joint):
    tokenizer, task = gpt2_tokenizer(tokenizer_dir), get_task(task_name)
    rows = load_split(task, split, data_dir=DATA_DIR / task_name).rows
    ids, counts = encode_rows(task, rows, tokenizer, 128)
    cut = [i for i, count in enumerate(counts) if count > 128]
    assert len(cut) >= 10  # these splits have rows this long; cutting at the end dropped their second sentence
    first, second = task.text_columns
    for i in cut:
        head, _, tail = tokenizer.decode(ids[i]).partition(joint)
        assert len(ids[i]) <= 128 and len(tail) >= min(20, len(rows[i][second])), (i, tokenizer.decode(ids[i]))
        assert rows[i][second].startswith(tail) and rows[i][first].startswith(head.split(": ", 1)[1].rstrip())


def test_pair_rows_must_name_both_columns(tokenizer_dir):
    with pytest.raises(DataError, match=r"text 2: task 'rte' needs string field\(s\) \['sentence2'\]"):
        encode_rows(get_task("rte"), [{"sentence1": "a", "sentence2": "b"}, {"sentence1": "a"}], gpt2_tokenizer(tokenizer_dir), 16)
    with pytest.raises(DataError, match="text 1: task 'rte' classifies text pairs; give an object with fields"):
        encode_rows(get_task("rte"), ["a b"], gpt2_tokenizer(tokenizer_dir), 16)


def test_labels_are_what_they_say(tmp_path):
    task = custom_task(custom(tmp_path, "text,label\na,1.0\nb,2.0\nc,2\n"), "text", None, "label", regression=False)
    assert task.label_names == ("1", "2")  # whole numbers compare as numbers, whatever their spelling
    validation = custom(tmp_path, "text,label\na,2\nb,1.0\nc,1\n", "validation.csv")
    assert load_split(task, "validation", file=validation).labels == [1, 0, 0]
    with pytest.raises(DataError, match=r"validation.csv: row 1, column 'label': unknown label '0'; expected one of \['1', '2'\]$"):
        load_split(task, "validation", file=custom(tmp_path, "text,label\na,0\nb,1\n", "validation.csv"))  # not index 0
    assert load_split(get_task("sst2"), "train", file=custom(tmp_path, "sentence,label\na,1\nb,0.0\n", "t.csv")).labels == [1, 0]


def test_empty_and_repeated_header_labels_name_the_row(tmp_path):
    with pytest.raises(DataError, match=r"train.csv: row 2, column 'label' is empty; every row needs a label"):
        custom_task(custom(tmp_path, "text,label\na,pos\nb,\nc,neg\n"), "text", None, "label", regression=False)
    with pytest.raises(DataError, match=r"train.csv: row 2 repeats the header \['text', 'label'\]"):
        custom_task(custom(tmp_path, "text,label\na,pos\ntext,label\nc,neg\n"), "text", None, "label", regression=False)
    task = custom_task(custom(tmp_path, "text,label\na,pos\nc,neg\n"), "text", None, "label", regression=False)
    with pytest.raises(DataError, match=r"validation.csv: row 3 repeats the header"):
        load_split(task, "validation", file=custom(tmp_path, "text,label\na,pos\nb,neg\ntext,label\n", "validation.csv"))
    with pytest.raises(DataError, match=r"validation.csv: row 1, column 'label' is empty"):
        load_split(task, "validation", file=custom(tmp_path, "text,label\na,\n", "validation.csv"))
    with pytest.raises(DataError, match=r"v.jsonl: row 2, column 'label' is empty"):
        load_split(task, "validation", file=custom(tmp_path, '{"text": "a", "label": "pos"}\n{"text": "b", "label": null}\n', "v.jsonl"))


def test_fractional_labels_suggest_regression(tmp_path):
    rows = "".join(f"t{i},{i / 10}\n" for i in range(64))
    with pytest.raises(DataError, match=r"holds numbers that are not whole \(0.1, 0.2, 0.3, ...\): pass --regression"):
        custom_task(custom(tmp_path, "text,label\n" + rows), "text", None, "label", regression=False)


def test_unreadable_files_name_the_line(tmp_path):
    sst2 = get_task("sst2")
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("sentence,label\nfine,1\ncaf\u00e9 au lait,0\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.csv: line 3 is not UTF-8 \(byte 0xe9 at offset 25\); convert the file, e.g. `iconv"):
        load_split(sst2, "train", file=latin1)
    broken = custom(tmp_path, '{"sentence": "fine", "label": 1}\n{"sentence": "oops", "label": \n{"sentence": "b", "label": 0}\n', "b.jsonl")
    with pytest.raises(DataError, match=r"b.jsonl line 2: not JSON \(Expecting value at column"):
        load_split(sst2, "train", file=broken)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"sentence": "fine", "label": 1}\n\n{"sentence": "bad", "label": 0}\n')
    assert load_split(sst2, "train", file=bom).labels == [1, 0]
    with pytest.raises(DataError, match=r"list.jsonl: line 1 is a list; each line must be an object"):
        load_split(sst2, "train", file=custom(tmp_path, '["fine", 1]\n', "list.jsonl"))
    with pytest.raises(DataError, match=r"comma.csv: Error tokenizing data. C error: Expected 2 fields in line 3, saw 3; quote cells"):
        load_split(sst2, "train", file=custom(tmp_path, "sentence,label\nfine,1\nslow, but fine,0\n", "comma.csv"))
    with pytest.raises(DataError, match=r"folder.csv: is a directory; give a file \(.csv, .json, .jsonl, .parquet, .tsv\)"):
        (tmp_path / "folder.csv").mkdir()
        load_split(sst2, "train", file=tmp_path / "folder.csv")


def test_numbers_in_text_columns_and_custom_splits_are_named(tmp_path):
    task = custom_task(custom(tmp_path, "text,label\na,pos\nb,neg\n"), "text", None, "label", regression=False)
    numbers = custom(tmp_path, '{"text": "fine", "label": "pos"}\n{"text": 5, "label": "neg"}\n', "v.jsonl")
    with pytest.raises(DataError, match=r"v.jsonl: row 2, column 'text' holds int 5, not text"):
        load_split(task, "validation", file=numbers)
    with pytest.raises(DataError, match=r"v.jsonl: row 1, column 'text' holds float 2.5, not text"):
        load_split(task, "validation", file=custom(tmp_path, '{"text": 2.5, "label": "pos"}\n', "v.jsonl"))
    with pytest.raises(DataError, match=r"task 'train' reads user files, so .* has no test split to look up for it; give the file itself"):
        load_split(task, "test", data_dir=tmp_path)


def test_characters_of_several_byte_tokens_are_cut_whole(tokenizer_dir):
    tokenizer, task = gpt2_tokenizer(tokenizer_dir), get_task("rte")
    rows = [{"sentence1": "日本語 日本語 ", "sentence2": "👍🏽" * 10}, {"sentence1": "日本語の文 " * 6, "sentence2": "ok ok 👍🏽👍🏽 fine"}]
    for row in rows:
        for max_length in range(14, 60):  # the template alone takes 8 tokens
            ids, _ = encode_rows(task, [row], tokenizer, max_length)
            text = tokenizer.decode(ids[0])
            assert len(ids[0]) <= max_length and "\ufffd" not in text, (max_length, text)  # no half of a character
            head, joint, tail = text.partition("\nHypothesis: ")
            assert head.startswith("Premise: ") and joint and row["sentence2"].startswith(tail), (max_length, text)
