"""Generation data and metrics: E2E read as sources with all their references, split by source, and scored
with multi-reference BLEU and ROUGE-L against published and hand-computed values."""

import pytest

from conftest import DATA_DIR
from suffixtune.errors import DataError
from suffixtune.tasks.e2e import render_e2e
from suffixtune.tasks.generation import generation_metrics, read_sources, split_by_source

E2E = DATA_DIR / "e2e"


def test_e2e_has_the_meaning_representations_and_references_of_its_paper():
    # Novikova et al. (2017), Table 1: development 547 MRs / 4,672 references; test 630 MRs / 4,693 references
    for name, meanings, references in [("devset.csv", 547, 4672), ("testset_w_refs.csv", 630, 4693)]:
        sources = read_sources(E2E / name, ["mr"], "ref")
        assert (len(sources.rows), sum(map(len, sources.references))) == (meanings, references)
        assert all(render_e2e(row["mr"]) for row in sources.rows)
    first = read_sources(E2E / "testset_w_refs.csv", ["mr"], "ref")
    assert first.rows[0] == {"mr": "name[Blue Spice], eatType[coffee shop], area[city centre]"}
    assert first.references[0][:2] == ["A coffee shop in the city centre area called Blue Spice.",
                                       "Blue Spice is a coffee shop in city centre."]


def test_a_split_never_parts_a_source_from_its_references():
    sources = read_sources(E2E / "devset.csv", ["mr"], "ref")
    kept, held_out = split_by_source(sources, held_out=0.1, seed=0)
    assert (len(kept.rows), len(held_out.rows)) == (492, 55)
    assert not {r["mr"] for r in kept.rows} & {r["mr"] for r in held_out.rows}
    assert sum(map(len, kept.references)) + sum(map(len, held_out.references)) == 4672
    by_meaning = dict(zip((r["mr"] for r in sources.rows), sources.references, strict=True))
    assert all(refs == by_meaning[row["mr"]] for row, refs in zip(held_out.rows, held_out.references, strict=True))
    assert split_by_source(sources, 0.1, seed=0)[1].rows == held_out.rows != split_by_source(sources, 0.1, seed=1)[1].rows
    with pytest.raises(DataError, match=r"devset.csv: 1 source\(s\) are too few to hold out 0.1 of them and keep any"):
        split_by_source(sources.select([0]), 0.1, seed=0)


def test_meaning_representations_read_as_text():
    assert render_e2e("name[The Eagle], eatType[coffee shop], food[French], priceRange[£20-25]") == (
        "name : The Eagle | eatType : coffee shop | food : French | priceRange : £20-25")
    for broken in ["name[The Eagle] food[French]", "The Eagle", "name[The Eagle], "]:
        with pytest.raises(DataError, match="not an E2E meaning representation"):
            render_e2e(broken)


def test_bad_generation_files_name_the_row_and_column(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("mr,ref\nname[A],A is here.\nname[B],\n")
    with pytest.raises(DataError, match=r"pairs.csv: row 2, column 'ref' is empty"):
        read_sources(path, ["mr"], "ref")
    with pytest.raises(DataError, match=r"pairs.csv: missing column\(s\) \['target'\]; available columns are \['mr', 'ref'\]"):
        read_sources(path, ["mr"], "target")


def test_bleu_and_rouge_l_take_every_reference():
    # sacrebleu's README example: "BLEU = 48.53 82.4/50.0/45.5/37.5", here with the references grouped by source
    hypotheses = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    references = [["The dog bit the man.", "The dog had bit the man."], ["It was not unexpected.", "No one was surprised."],
                  ["The man bit him first.", "The man had bitten the dog."]]
    assert generation_metrics(hypotheses, references)["bleu"] == pytest.approx(48.53, abs=0.005)
    # ROUGE-L by hand: the longest common subsequence of "the cat sat on the mat" and "the cat is on the mat" is 5
    # of 6 words each way (F1 5/6); the best reference counts, so an unrelated second reference changes nothing
    assert generation_metrics(["the cat sat on the mat"], [["the cat is on the mat", "a dog"]])["rouge_l"] == pytest.approx(500 / 6)
    # a source with fewer references than another is scored on the ones it has
    uneven = generation_metrics(["the cat sat on the mat", "a dog"], [["the cat is on the mat"], ["a dog", "one dog", "dogs"]])
    assert uneven["rouge_l"] == pytest.approx((500 / 6 + 100) / 2)
    with pytest.raises(DataError, match="2 hypotheses need as many non-empty reference lists, got 1"):
        generation_metrics(["a", "b"], [["a"]])


@pytest.mark.slow  # METEOR starts Java for each call
def test_the_official_e2e_metrics_as_near_as_libraries_compute_them():
    references = [["the cat is on the mat"], ["there was one dog in our garden"], ["it rains all day in london"]]
    perfect = generation_metrics([refs[0] for refs in references], references)
    # CIDEr is 10 x the mean over n = 1..4 of tf-idf cosines with the references: each hypothesis here is its only
    # reference (cosine 1 at every n), so 10 exactly
    assert perfect["cider"] == pytest.approx(10)
    assert perfect["meteor"] > 99  # 100 less METEOR's fragmentation penalty for one chunk
    unrelated = generation_metrics(["zebra quartz violin"] * 3, references)
    assert unrelated["cider"] == 0 and unrelated["meteor"] == 0 and unrelated["nist_nltk"] == 0 and unrelated["rouge_l_coco"] == 0
    partial = generation_metrics(["the cat is on a rug", "there was a dog", "it rains in paris"], references)
    assert 0 < partial["meteor"] < perfect["meteor"] and 0 < partial["cider"] < perfect["cider"]
    assert 0 < partial["nist_nltk"] < perfect["nist_nltk"]
    assert perfect["rouge_l_coco"] == pytest.approx(100) and perfect["bleu_uncased"] == pytest.approx(100)
    # the official BLEU ignores case: "The Cat" is "the cat" there, not here
    cased = generation_metrics(["THE CAT IS ON THE MAT"], [["the cat is on the mat"]])
    assert cased["bleu"] == 0 and cased["bleu_uncased"] == pytest.approx(100)
    # COCO's ROUGE-L (beta 1.2, as the official script): hypothesis "the cat sat" against "the cat sat on the mat"
    # has LCS 3, precision 3/3, recall 3/6: F = (1 + 1.2^2) P R / (R + 1.2^2 P)
    coco = generation_metrics(["the cat sat"], [["the cat sat on the mat"]])["rouge_l_coco"]
    assert coco == pytest.approx(100 * (1 + 1.44) * 1 * 0.5 / (0.5 + 1.44 * 1))
